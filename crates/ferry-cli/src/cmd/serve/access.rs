//! Who may subscribe and publish to a topic: the first `[[topics.rule]]` whose pattern
//! matches decides; without one, the default (a token's permissions when a key is
//! configured, anyone otherwise).

use serde::{Deserialize, Serialize};

use super::auth::{Grant, Pattern};

/// Who may subscribe to a topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Subscribers {
    /// Any connection, with a token or without.
    Anyone,
    /// Connections whose token's `subscribe` patterns cover the topic.
    Token,
}

/// Who may publish to a topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Publishers {
    Anyone,
    /// Connections whose token's `publish` patterns cover the topic.
    Token,
    /// Only the server's HTTP API (`/api/publish`): the backend.
    Api,
}

/// `[[topics.rule]]` as written in the config file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// A topic name, or a prefix ending in `*`.
    pub pattern: String,
    /// Default: `token` when a key is configured, `anyone` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribe: Option<Subscribers>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<Publishers>,
    /// Messages of history kept for these topics (default: --history-size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_size: Option<usize>,
    /// How long their history outlives the last publish (default: --history-ttl).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_ttl: Option<crate::size::Dur>,
}

#[derive(Debug)]
struct Rule {
    pattern: Pattern,
    subscribe: Subscribers,
    publish: Publishers,
}

/// The topic rules in force.
#[derive(Debug)]
pub struct Access {
    rules: Vec<Rule>,
    default: (Subscribers, Publishers),
}

impl Access {
    /// Checks the rules; errors name the rule by its index and say the fix.
    pub fn new(rules: &[RuleConfig], tokens: bool) -> Result<Access, String> {
        let default = if tokens {
            (Subscribers::Token, Publishers::Token)
        } else {
            (Subscribers::Anyone, Publishers::Anyone)
        };
        let mut out = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            let pattern = Pattern::parse(&rule.pattern)
                .map_err(|e| format!("topics.rule[{i}].pattern: {e}"))?;
            if rule.history_ttl.is_some_and(|t| t.0.is_zero()) {
                return Err(format!(
                    "topics.rule[{i}].history_ttl is 0; remove it for --history-ttl, or try 5m"
                ));
            }
            let subscribe = rule.subscribe.unwrap_or(default.0);
            let publish = rule.publish.unwrap_or(default.1);
            if !tokens && (subscribe == Subscribers::Token || publish == Publishers::Token) {
                return Err(format!(
                    "topics.rule[{i}] ({}): \"token\" needs a key to check tokens with; give --jwt-hmac-secret-file or --jwt-public-key, or use \"anyone\"",
                    rule.pattern
                ));
            }
            out.push(Rule {
                pattern,
                subscribe,
                publish,
            });
        }
        Ok(Access {
            rules: out,
            default,
        })
    }

    fn rule(&self, topic: &str) -> (Subscribers, Publishers) {
        self.rules
            .iter()
            .find(|r| r.pattern.matches(topic))
            .map_or(self.default, |r| (r.subscribe, r.publish))
    }

    pub fn may_subscribe(&self, topic: &str, grant: Option<&Grant>) -> bool {
        match self.rule(topic).0 {
            Subscribers::Anyone => true,
            Subscribers::Token => grant.is_some_and(|g| g.may_subscribe(topic)),
        }
    }

    /// Whether a WebSocket connection may publish (the HTTP API always may).
    pub fn may_publish(&self, topic: &str, grant: Option<&Grant>) -> bool {
        match self.rule(topic).1 {
            Publishers::Anyone => true,
            Publishers::Token => grant.is_some_and(|g| g.may_publish(topic)),
            Publishers::Api => false,
        }
    }

    /// Whether some topic may be used without a token, so a control connection without one
    /// has something to do.
    pub fn anything_for_anyone(&self) -> bool {
        self.default.0 == Subscribers::Anyone
            || self
                .rules
                .iter()
                .any(|r| r.subscribe == Subscribers::Anyone || r.publish == Publishers::Anyone)
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    fn rule(pattern: &str, s: Option<Subscribers>, p: Option<Publishers>) -> RuleConfig {
        RuleConfig {
            pattern: pattern.into(),
            subscribe: s,
            publish: p,
            history_size: None,
            history_ttl: None,
        }
    }

    fn grant(subscribe: &[&str], publish: &[&str]) -> Grant {
        Grant {
            sub: Some("u".into()),
            expires: SystemTime::now(),
            subscribe: subscribe
                .iter()
                .map(|p| Pattern::parse(p).unwrap())
                .collect(),
            publish: publish.iter().map(|p| Pattern::parse(p).unwrap()).collect(),
            bridges: vec![],
        }
    }

    #[test]
    fn the_first_matching_rule_wins_then_the_default() {
        let access = Access::new(
            &[
                rule("public.*", Some(Subscribers::Anyone), Some(Publishers::Api)),
                rule(
                    "public.chat",
                    Some(Subscribers::Anyone),
                    Some(Publishers::Anyone),
                ),
            ],
            true,
        )
        .unwrap();
        let reader = grant(&["chat.*"], &[]);
        assert!(access.may_subscribe("public.news", None));
        assert!(
            !access.may_publish("public.chat", Some(&reader)),
            "first rule: api only"
        );
        assert!(access.may_subscribe("chat.x", Some(&reader)));
        assert!(!access.may_subscribe("chat.x", None));
        assert!(!access.may_publish("chat.x", Some(&reader)));
        assert!(access.may_publish("chat.x", Some(&grant(&[], &["chat.*"]))));
        assert!(access.anything_for_anyone());
        assert!(!Access::new(&[], true).unwrap().anything_for_anyone());
    }

    #[test]
    fn bad_rules_are_named() {
        let err = Access::new(&[rule("a b", None, None)], true).unwrap_err();
        assert!(err.contains("topics.rule[0].pattern"), "{err}");
        let err = Access::new(&[rule("x", Some(Subscribers::Token), None)], false).unwrap_err();
        assert!(err.contains("--jwt-hmac-secret-file"), "{err}");
        let open = Access::new(&[rule("feed.*", None, Some(Publishers::Api))], false).unwrap();
        assert!(open.may_subscribe("feed.a", None));
        assert!(!open.may_publish("feed.a", None));
        assert!(open.may_publish("other", None));
    }
}
