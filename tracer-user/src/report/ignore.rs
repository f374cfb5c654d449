//! `--ignore FILE`: suppression rules, like goleak's `IgnoreTopFunction`. A suppressed candidate
//! stays in the report, marked with the rule that matched; it is never dropped.
//!
//! The file has one rule per line; `#` starts a comment; blank lines are skipped. A rule is one
//! or more conditions joined by ` & `, all of which must hold. A condition is a key, a space and
//! a value (the rest of the condition, trimmed, so wait reasons may contain spaces):
//!
//! | key | holds when |
//! |---|---|
//! | `kind K` | the candidate's kind is K (`goroutine_leak`, `futex_wait`, ... as in the JSON) |
//! | `function F` | F names a frame of the blocking stack (the candidate's or any of its threads') or of the creation stack |
//! | `top-function F` | F is the innermost frame of the blocking stack outside the Go runtime and standard library (`runtime.`, `sync.`, `internal/` ...), goleak's `IgnoreTopFunction` |
//! | `blocking-function F` | F names a frame of the blocking stack |
//! | `creation-function F` | F names a frame of the creation stack |
//! | `wait-reason R` | the goroutine wait reason is R (`chan receive`, `select`, ...) |
//!
//! A function value ending in `*` matches every function name starting with what precedes it.
use std::path::Path;

use anyhow::{bail, Context as _, Result};
use serde::Serialize;

use crate::analyze::Finding;
use crate::model::goroutines::is_runtime_frame;
use crate::model::Frame;

/// The rule that suppressed a candidate: its text as written and where.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Suppression {
    pub rule: String,
    pub file: String,
    pub line: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Condition {
    Kind(String),
    Function(Pattern),
    TopFunction(Pattern),
    BlockingFunction(Pattern),
    CreationFunction(Pattern),
    WaitReason(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Pattern {
    text: String,
    prefix: bool,
}

impl Pattern {
    fn new(value: &str) -> Self {
        match value.strip_suffix('*') {
            Some(prefix) => Pattern {
                text: prefix.to_string(),
                prefix: true,
            },
            None => Pattern {
                text: value.to_string(),
                prefix: false,
            },
        }
    }

    fn matches(&self, frame: &Frame) -> bool {
        frame.function.as_deref().is_some_and(|f| {
            if self.prefix {
                f.starts_with(&self.text)
            } else {
                f == self.text
            }
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    text: String,
    line: usize,
    conditions: Vec<Condition>,
}

/// The rules of one ignore file, in file order (the first matching rule is named).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IgnoreRules {
    file: String,
    rules: Vec<Rule>,
}

const KINDS: &[&str] = &[
    "deadlock",
    "futex_wait",
    "goroutine_leak",
    "thread_leak",
    "epoll_wait",
    "timerfd",
    "go_timer",
];

impl IgnoreRules {
    /// Reads and parses a rule file. Errors name the file and the line.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the ignore file {}", path.display()))?;
        Self::parse(&path.display().to_string(), &text)
    }

    /// Parses rules; `file` is only used in messages and in [`Suppression::file`].
    pub fn parse(file: &str, text: &str) -> Result<Self> {
        let mut rules = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let rule = raw.split('#').next().unwrap_or("").trim();
            if rule.is_empty() {
                continue;
            }
            let conditions = rule
                .split(" & ")
                .map(parse_condition)
                .collect::<Result<Vec<_>>>()
                .with_context(|| format!("{file}:{line}: bad ignore rule `{rule}`"))?;
            rules.push(Rule {
                text: rule.to_string(),
                line,
                conditions,
            });
        }
        Ok(IgnoreRules {
            file: file.to_string(),
            rules,
        })
    }

    /// The first rule that matches the candidate, if any.
    pub fn matching(&self, candidate: &Finding) -> Option<Suppression> {
        self.rules
            .iter()
            .find(|rule| rule.conditions.iter().all(|c| holds(c, candidate)))
            .map(|rule| Suppression {
                rule: rule.text.clone(),
                file: self.file.clone(),
                line: rule.line,
            })
    }

    /// One note per rule that suppressed none of `suppressions` (the report's matches): a rule
    /// that matches nothing is usually mistyped, or the leak it hid is gone.
    pub fn unused(&self, suppressions: &[&Suppression]) -> Vec<String> {
        self.rules
            .iter()
            .filter(|rule| !suppressions.iter().any(|s| s.line == rule.line))
            .map(|rule| {
                format!(
                    "ignore rule {}:{} `{}` matched no candidate",
                    self.file, rule.line, rule.text
                )
            })
            .collect()
    }
}

fn parse_condition(condition: &str) -> Result<Condition> {
    let condition = condition.trim();
    let (key, value) = condition
        .split_once(char::is_whitespace)
        .map(|(k, v)| (k, v.trim()))
        .unwrap_or((condition, ""));
    if value.is_empty() {
        bail!("`{key}` needs a value (e.g. `function main.worker`)");
    }
    Ok(match key {
        "kind" => {
            if !KINDS.contains(&value) {
                bail!("unknown kind `{value}`; kinds are {}", KINDS.join(", "));
            }
            Condition::Kind(value.to_string())
        }
        "function" => Condition::Function(Pattern::new(value)),
        "top-function" => Condition::TopFunction(Pattern::new(value)),
        "blocking-function" => Condition::BlockingFunction(Pattern::new(value)),
        "creation-function" => Condition::CreationFunction(Pattern::new(value)),
        "wait-reason" => Condition::WaitReason(value.to_string()),
        other => bail!(
            "unknown key `{other}`; keys are kind, function, top-function, blocking-function, creation-function, wait-reason"
        ),
    })
}

fn holds(condition: &Condition, c: &Finding) -> bool {
    let creation = c.creation_stack.as_deref().unwrap_or(&[]);
    // The candidate's stack, and each of its threads' own (a deadlock's threads differ).
    let blocking = || {
        std::iter::once(c.blocking_stack.as_slice())
            .chain(c.threads().iter().map(|t| t.blocking_stack.as_slice()))
    };
    match condition {
        Condition::Kind(kind) => c.kind().name() == kind,
        Condition::Function(p) => blocking().flatten().chain(creation).any(|f| p.matches(f)),
        Condition::TopFunction(p) => blocking().any(|stack| {
            stack
                .iter()
                .find(|f| !is_runtime_frame(f))
                .is_some_and(|f| p.matches(f))
        }),
        Condition::BlockingFunction(p) => blocking().flatten().any(|f| p.matches(f)),
        Condition::CreationFunction(p) => creation.iter().any(|f| p.matches(f)),
        Condition::WaitReason(reason) => c.wait_reason() == Some(reason.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::goroutines::GoroutineGroup;
    use crate::analyze::{Detail, Percentiles};

    fn frame(function: &str) -> Frame {
        Frame {
            function: Some(function.into()),
            ..Frame::unknown(0x1000)
        }
    }

    /// A goroutine candidate made from a real analysis' candidate, so fields added to
    /// `Finding`'s head need no edit here.
    fn goroutine_candidate() -> Finding {
        let mut c = crate::report::tests::report().candidates[0]
            .candidate
            .clone();
        c.detail = Detail::GoroutineLeak {
            group: GoroutineGroup {
                created_at: "main.start (main.go:10)".into(),
                sits_at: "main.worker (main.go:20)".into(),
                state: "chan receive".into(),
                count: 1,
                count_at_start: 1,
                count_max: 1,
                created_during_trace: 0,
                growth_per_s: 0.0,
                age_ns: Percentiles::default(),
                sample_goids: vec![7],
                history: Vec::new(),
                not_a_candidate: None,
            },
            wait_reason: Some("chan receive".into()),
        };
        c.blocking_stack = vec![
            frame("runtime.gopark"),
            frame("runtime.chanrecv1"),
            frame("main.worker"),
        ];
        c.creation_stack = Some(vec![frame("main.start")]);
        c
    }

    #[test]
    fn a_rule_that_matched_nothing_is_named() {
        let rules = IgnoreRules::parse(
            "ignore.txt",
            "kind goroutine_leak\n# comment\nfunction main.gone\n",
        )
        .unwrap();
        let used = rules.matching(&goroutine_candidate()).unwrap();
        assert_eq!(
            rules.unused(&[&used]),
            vec!["ignore rule ignore.txt:3 `function main.gone` matched no candidate"]
        );
        assert_eq!(rules.unused(&[]).len(), 2);
    }

    #[test]
    fn conditions_combine_and_the_first_matching_rule_is_named() {
        let rules = IgnoreRules::parse(
            "ignore.txt",
            "# comment\n\nkind futex_wait\nkind goroutine_leak & wait-reason chan receive & top-function main.work*  # pool\nfunction main.start\n",
        )
        .unwrap();
        let hit = rules.matching(&goroutine_candidate()).unwrap();
        assert_eq!(hit.line, 4);
        assert_eq!(
            hit.rule,
            "kind goroutine_leak & wait-reason chan receive & top-function main.work*"
        );
        let rules =
            IgnoreRules::parse("f", "top-function runtime.gopark\nwait-reason select").unwrap();
        assert_eq!(rules.matching(&goroutine_candidate()), None);
        let rules = IgnoreRules::parse("f", "creation-function main.start").unwrap();
        assert_eq!(rules.matching(&goroutine_candidate()).unwrap().line, 1);
    }

    #[test]
    fn bad_rules_name_the_line() {
        for (text, needle) in [
            (
                "kind goroutine_leak\nkind goroutines",
                "f:2: bad ignore rule",
            ),
            ("\n\nfuncton main.x", "f:3"),
            ("function", "f:1"),
            ("kind goroutine_leak & ", "f:1"),
        ] {
            let err = format!("{:#}", IgnoreRules::parse("f", text).unwrap_err());
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }
}
