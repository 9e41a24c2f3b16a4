//! Notes the planner rules leave for `EXPLAIN`: a rule that makes a choice the
//! plan alone does not show (a copy of a subset read or passed over, and why)
//! records it here, and the query planner adds the query's notes to `EXPLAIN`.
//!
//! The notes travel in the session's config, the one thing an optimizer rule can
//! read; each query's session gets a fresh list ([`PlanNotes::install`]).

use std::any::Any;
use std::sync::Arc;

use datafusion::common::config::{ConfigEntry, ConfigExtension, ConfigOptions, ExtensionOptions};
use datafusion::common::{plan_err, Result};
use parking_lot::Mutex;

#[derive(Debug, Clone, Default)]
pub(crate) struct PlanNotes(Arc<Mutex<Vec<String>>>);

impl PlanNotes {
    /// A fresh list for one query's session.
    pub fn install(options: &mut ConfigOptions) {
        options.extensions.insert(PlanNotes::default());
    }

    /// Records `note` in the query's list (none outside a query's session).
    pub fn record(options: &ConfigOptions, note: String) {
        if let Some(notes) = options.extensions.get::<PlanNotes>() {
            let mut list = notes.0.lock();
            // Optimizer passes may meet the same choice twice.
            if !list.contains(&note) {
                list.push(note);
            }
        }
    }

    pub fn of(options: &ConfigOptions) -> Vec<String> {
        options
            .extensions
            .get::<PlanNotes>()
            .map(|n| n.0.lock().clone())
            .unwrap_or_default()
    }
}

impl ConfigExtension for PlanNotes {
    const PREFIX: &'static str = "quiver_plan_notes";
}

impl ExtensionOptions for PlanNotes {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn cloned(&self) -> Box<dyn ExtensionOptions> {
        Box::new(self.clone())
    }

    fn set(&mut self, key: &str, _value: &str) -> Result<()> {
        plan_err!("{key}: the planner's notes are not a setting")
    }

    fn entries(&self) -> Vec<ConfigEntry> {
        vec![]
    }
}
