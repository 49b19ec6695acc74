//! With no source named: the endpoints this user's registries announce on this host
//! (hive-db-core's `discovery`), listed again before each sample so that registries that
//! start or stop during a run come and go.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use hive_db_core::discovery::{self, Announcement, SkipReason};

use crate::attach::Endpoint;

/// The warning for a stale announcement.
fn stopped_without_closing(s: &discovery::Skipped) -> String {
    format!("a registry stopped without closing its endpoint (killed or crashed): {s}")
}

/// The announced endpoints, as of the last [`Discovered::refresh`].
#[derive(Debug)]
pub(crate) struct Discovered {
    timeout: Duration,
    /// One client per announced endpoint, kept across refreshes.
    endpoints: Vec<(Announcement, Endpoint)>,
    /// Files and problems already warned about, so each is said once per run.
    warned: HashSet<String>,
    /// Stale announcements found (and removed) while a sample read their endpoints, to be
    /// said by the next refresh or, in a one-shot report, at its end.
    stale_seen: std::sync::Mutex<Vec<String>>,
}

impl Discovered {
    /// Nothing found yet; [`Discovered::refresh`] lists the folder.
    pub(crate) fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            endpoints: Vec::new(),
            warned: HashSet::new(),
            stale_seen: std::sync::Mutex::default(),
        }
    }

    /// The folders announcements are read from, for messages.
    pub(crate) fn folders() -> Vec<PathBuf> {
        discovery::folders().unwrap_or_default()
    }

    /// Every live announcement in this user's folders (an endpoint announced in two of them
    /// once), and the problems met on the way.
    fn list() -> (Vec<Announcement>, Vec<discovery::Skipped>, Vec<String>) {
        let cannot = |e: discovery::DiscoveryError| {
            format!(
                "cannot look for registries: {}",
                hive_db_core::error_chain(&e)
            )
        };
        let folders = match discovery::folders() {
            Ok(folders) => folders,
            Err(e) => return (Vec::new(), Vec::new(), vec![cannot(e)]),
        };
        let (mut live, mut skipped, mut errors) = (Vec::new(), Vec::new(), Vec::new());
        for folder in folders {
            match discovery::list_in(&folder) {
                Ok(listing) => {
                    for a in listing.live {
                        if !live.contains(&a) {
                            live.push(a);
                        }
                    }
                    skipped.extend(listing.skipped);
                }
                Err(e) => errors.push(cannot(e)),
            }
        }
        (live, skipped, errors)
    }

    /// Lists the folder again: new endpoints join, those whose announcement went away
    /// leave. Returns the warnings not given before in this run: a file that is not an
    /// announcement, another user's, or one pointing off loopback (never followed), or a
    /// folder that cannot be read (nothing found); and a stale announcement (its process
    /// was killed or crashed: a clean stop removes it), which the listing removes.
    pub(crate) fn refresh(&mut self) -> Vec<String> {
        let mut warnings = Vec::new();
        let (live, skipped, errors) = Self::list();
        for s in skipped {
            if matches!(s.reason, SkipReason::Stale { .. }) {
                // The only trace of a registry killed or crashed: a clean stop removes its
                // announcement.
                self.warn(stopped_without_closing(&s), &mut warnings);
            } else if s.reason.is_suspicious() {
                self.warn(format!("ignoring {s}"), &mut warnings);
            } else {
                tracing::debug!("{s}");
            }
        }
        for e in errors {
            self.warn(e, &mut warnings);
        }
        for stale in self.late_warnings() {
            self.warn(stale, &mut warnings);
        }

        let mut old = std::mem::take(&mut self.endpoints);
        for a in live {
            let endpoint = match old.iter().position(|(o, _)| *o == a) {
                Some(i) => old.swap_remove(i).1,
                None => Endpoint::new(&format!("http://{}", a.addr), self.timeout),
            };
            self.endpoints.push((a, endpoint));
        }
        warnings
    }

    fn warn(&mut self, message: String, warnings: &mut Vec<String>) {
        if self.warned.insert(message.clone()) {
            warnings.push(message);
        }
    }

    /// The endpoints found, in the order of process id and port.
    pub(crate) fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints.iter().map(|(_, e)| e)
    }

    /// Whether the endpoint at `base` is still announced by a running process: one that
    /// could not be read but is no longer announced stopped meanwhile, which is no failure.
    /// The listing removes a stale announcement; that it was stale (the registry was killed
    /// while the sample read it) is kept for [`Discovered::late_warnings`], since the next
    /// listing would not find the file any more.
    pub(crate) fn still_announced(&self, base: &str) -> bool {
        let (live, skipped, _) = Self::list();
        let stale = skipped
            .into_iter()
            // Only those this listing removed: one it could not remove is listed again by
            // the next refresh, which says it once (a copy queued here too was said again for
            // each failed read of a one-shot report).
            .filter(|s| matches!(s.reason, SkipReason::Stale { pruned: true, .. }))
            .map(|s| stopped_without_closing(&s));
        self.stale_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(stale);
        live.iter().any(|a| format!("http://{}", a.addr) == base)
    }

    /// The stale announcements [`Discovered::still_announced`] found since the last call.
    pub(crate) fn late_warnings(&self) -> Vec<String> {
        std::mem::take(
            &mut *self
                .stale_seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}
