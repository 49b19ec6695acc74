//! Which events a subscriber wants: `*`, an exact type, or a dotted prefix.

use crate::error::{Error, Result};

/// Which events a subscriber wants: every one (`*`), one type exactly, or a dotted prefix
/// (`simulation.*` matches `simulation.started` and `simulation.step.done`, not `simulation`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// `*`.
    All,
    /// An exact event type.
    Exact(String),
    /// `prefix.*`: the prefix with its dot.
    Prefix(String),
}

impl Pattern {
    /// Parses `*`, `type` or `prefix.*`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for an empty pattern or one with `*` anywhere else.
    pub fn parse(pattern: &str) -> Result<Self> {
        let invalid = |reason| Error::InvalidInput {
            what: "subscription pattern",
            value: pattern.to_owned(),
            reason,
        };
        if pattern == "*" {
            return Ok(Self::All);
        }
        if pattern.is_empty() {
            return Err(invalid("empty"));
        }
        match pattern.strip_suffix('*') {
            Some(prefix) if prefix.ends_with('.') && prefix.len() > 1 && !prefix.contains('*') => {
                Ok(Self::Prefix(prefix.to_owned()))
            }
            Some(_) => Err(invalid("`*` only alone or after a final dot (`prefix.*`)")),
            None if pattern.contains('*') => {
                Err(invalid("`*` only alone or after a final dot (`prefix.*`)"))
            }
            None => Ok(Self::Exact(pattern.to_owned())),
        }
    }

    /// True when `event_type` matches.
    pub fn matches(&self, event_type: &str) -> bool {
        match self {
            Self::All => true,
            Self::Exact(t) => t == event_type,
            Self::Prefix(p) => event_type.starts_with(p.as_str()) && event_type.len() > p.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bug caught: `prefix.*` matching the bare prefix or another prefix, `*` rules loose.
    #[test]
    fn patterns() -> Result<()> {
        assert!(Pattern::parse("*")?.matches("anything"));
        let exact = Pattern::parse("simulation.completed")?;
        assert!(exact.matches("simulation.completed"));
        assert!(!exact.matches("simulation.completed.late"));
        let prefix = Pattern::parse("simulation.*")?;
        assert!(prefix.matches("simulation.started"));
        assert!(prefix.matches("simulation.step.done"));
        assert!(!prefix.matches("simulation"));
        assert!(!prefix.matches("simulation."));
        assert!(!prefix.matches("simulations.started"));
        for bad in ["", "sim*", "*.done", "a.*.b", ".*", "a.**"] {
            assert!(
                matches!(Pattern::parse(bad), Err(Error::InvalidInput { .. })),
                "{bad:?} accepted"
            );
        }
        Ok(())
    }
}
