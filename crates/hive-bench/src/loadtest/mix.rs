//! The operations of the load test and the weighted mix they are drawn from.

use std::fmt;
use std::str::FromStr;

use anyhow::{Context, bail};

use crate::measure::Rng;

/// One kind of operation. The first six run on the `ecosystemiser` database, the task ones on
/// the application databases (a random one each time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Op {
    /// Read one component spec (by type and name) from the component library.
    ComponentLookup,
    /// Publish one event to the event store.
    EventPublish,
    /// Read the newest events of one simulation back.
    EventHistory,
    /// Insert a batch of simulation metrics in one transaction.
    MetricsBatch,
    /// Move a study and one of its simulations on by one status, in one transaction.
    StudyUpdate,
    /// The original load test's transaction: create-if-not-exists, one insert, one count.
    OriginalTxn,
    /// Enqueue one orchestrator task.
    TaskEnqueue,
    /// Claim the oldest pending task.
    TaskClaim,
    /// Complete a task this worker claimed.
    TaskComplete,
    /// List the newest tasks of one status.
    TaskList,
}

impl Op {
    /// Every operation, in report order.
    pub(crate) const ALL: [Op; 10] = [
        Op::ComponentLookup,
        Op::EventPublish,
        Op::EventHistory,
        Op::MetricsBatch,
        Op::StudyUpdate,
        Op::OriginalTxn,
        Op::TaskEnqueue,
        Op::TaskClaim,
        Op::TaskComplete,
        Op::TaskList,
    ];

    /// The name used in `--mix`, the report and the JSON.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Op::ComponentLookup => "component_lookup",
            Op::EventPublish => "event_publish",
            Op::EventHistory => "event_history",
            Op::MetricsBatch => "metrics_batch",
            Op::StudyUpdate => "study_update",
            Op::OriginalTxn => "original_txn",
            Op::TaskEnqueue => "task_enqueue",
            Op::TaskClaim => "task_claim",
            Op::TaskComplete => "task_complete",
            Op::TaskList => "task_list",
        }
    }

    /// Its index in [`Op::ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// True for operations on the application databases.
    pub(crate) fn is_task(self) -> bool {
        matches!(
            self,
            Op::TaskEnqueue | Op::TaskClaim | Op::TaskComplete | Op::TaskList
        )
    }

    fn from_name(name: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.name() == name)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Weights of the operations: each worker draws its next operation with probability
/// weight / total. Parsed from `name=weight,...`; names left out keep their default weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mix {
    weights: [u32; Op::ALL.len()],
}

impl Default for Mix {
    /// Reads first, as the application does: mostly lookups and history reads, event
    /// publishes and task traffic, fewer batch inserts and study updates.
    fn default() -> Self {
        let mut weights = [0; Op::ALL.len()];
        for (op, w) in [
            (Op::ComponentLookup, 25),
            (Op::EventPublish, 15),
            (Op::EventHistory, 10),
            (Op::MetricsBatch, 5),
            (Op::StudyUpdate, 5),
            (Op::OriginalTxn, 10),
            (Op::TaskEnqueue, 10),
            (Op::TaskClaim, 8),
            (Op::TaskComplete, 7),
            (Op::TaskList, 5),
        ] {
            weights[op.index()] = w;
        }
        Self { weights }
    }
}

impl Mix {
    /// The weight of `op`.
    pub(crate) fn weight(&self, op: Op) -> u32 {
        self.weights[op.index()]
    }

    /// The operations with a weight above zero, with their weights, in report order.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (Op, u32)> + '_ {
        Op::ALL
            .into_iter()
            .map(|op| (op, self.weight(op)))
            .filter(|(_, w)| *w > 0)
    }

    /// True when some task operation has a weight: the application databases get work.
    pub(crate) fn has_tasks(&self) -> bool {
        self.entries().any(|(op, _)| op.is_task())
    }

    /// Draws one operation.
    pub(crate) fn pick(&self, rng: &mut Rng) -> Op {
        let total: u64 = self.weights.iter().map(|w| u64::from(*w)).sum();
        let mut ticket = rng.next() % total.max(1);
        for (op, w) in self.entries() {
            let w = u64::from(w);
            if ticket < w {
                return op;
            }
            ticket -= w;
        }
        // Unreachable while the weights sum to `total` (parsing refuses an all-zero mix).
        Op::ComponentLookup
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for op in Op::ALL {
            let w = self.weight(op);
            if !first {
                f.write_str(",")?;
            }
            first = false;
            write!(f, "{op}={w}")?;
        }
        Ok(())
    }
}

impl FromStr for Mix {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Mix> {
        let mut mix = Mix::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .with_context(|| format!("{part:?} is not name=weight"))?;
            let op = Op::from_name(name.trim()).with_context(|| {
                let names: Vec<_> = Op::ALL.iter().map(|op| op.name()).collect();
                format!("unknown operation {name:?} (one of {})", names.join(", "))
            })?;
            mix.weights[op.index()] = weight
                .trim()
                .parse()
                .with_context(|| format!("weight of {name} is not a whole number: {weight:?}"))?;
        }
        if mix.weights.iter().all(|w| *w == 0) {
            bail!("every weight is zero: nothing to run");
        }
        Ok(mix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bug caught: `--mix` parsing that loses a weight, accepts an unknown name, or prints a
    /// mix the report states differently from the one that ran.
    #[test]
    fn parses_prints_and_refuses() -> anyhow::Result<()> {
        let mix: Mix = "original_txn=3, task_list=0".parse()?;
        assert_eq!(mix.weight(Op::OriginalTxn), 3);
        assert_eq!(mix.weight(Op::TaskList), 0);
        assert_eq!(
            mix.weight(Op::EventPublish),
            15,
            "unnamed keep their default"
        );
        assert_eq!(mix.to_string().parse::<Mix>()?, mix);
        assert!("nope=1".parse::<Mix>().is_err());
        assert!("original_txn".parse::<Mix>().is_err());
        assert!("original_txn=-1".parse::<Mix>().is_err());
        let zero: String = Op::ALL.iter().map(|op| format!("{op}=0,")).collect();
        assert!(zero.parse::<Mix>().is_err());
        Ok(())
    }

    /// Bug caught: a draw that never picks some weighted operation or picks a zero-weight one.
    #[test]
    fn draws_follow_the_weights() -> anyhow::Result<()> {
        let mix: Mix = "component_lookup=1,event_publish=0,task_claim=2".parse()?;
        let mut rng = Rng::new(7);
        let mut counts = [0u32; Op::ALL.len()];
        for _ in 0..20_000 {
            counts[mix.pick(&mut rng).index()] += 1;
        }
        assert_eq!(counts[Op::EventPublish.index()], 0);
        for (op, w) in mix.entries() {
            assert!(counts[op.index()] > 0, "{op} never drawn");
            let _ = w;
        }
        // task_claim weighs 2 against component_lookup's 1.
        assert!(counts[Op::TaskClaim.index()] > counts[Op::ComponentLookup.index()]);
        Ok(())
    }
}
