//! What /proc says about a process: its CPU time and its resident memory.

use std::io;

/// utime + stime of a process, in clock ticks.
pub(super) fn read_proc_stat(pid: u32) -> io::Result<u64> {
    parse_proc_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat"))?)
}

pub(super) fn read_proc_stat_self() -> io::Result<u64> {
    parse_proc_stat(&std::fs::read_to_string("/proc/self/stat")?)
}

pub(super) fn parse_proc_stat(text: &str) -> io::Result<u64> {
    // The command name (field 2) may hold spaces and parentheses: fields count from the last ')'.
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "unexpected /proc/PID/stat format",
        )
    };
    let rest = text.rsplit_once(')').ok_or_else(bad)?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields
        .get(11)
        .and_then(|f| f.parse().ok())
        .ok_or_else(bad)?;
    let stime: u64 = fields
        .get(12)
        .and_then(|f| f.parse().ok())
        .ok_or_else(bad)?;
    Ok(utime + stime)
}

/// VmRSS of a process, in KiB.
pub(super) fn read_rss_kib(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no VmRSS in /proc/PID/status"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_fields_after_the_command_name() {
        let line =
            "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 37 0 0 20 0 1 0 5 0 0";
        assert_eq!(parse_proc_stat(line).unwrap(), 287);
    }
}
