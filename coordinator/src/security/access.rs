//! Who may read what: `[access]` rules over catalogs, schemas and tables, with column
//! masks and row filters, decided per user and role.
//!
//! Rules are read in order and the first one that matches both the user and the table
//! decides; a table no rule matches is denied. Users with an admin role read
//! everything, `system.*` included, unmasked. Everyone else reads from `system` only
//! `system.queries`, filtered to their own queries. Without `[[access.rule]]` entries
//! every user reads every table (`system` stays as above). Without `[server.auth]`
//! nobody logs in and there is nothing to decide: everything is readable.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

use crate::reserved::{is_catalog_schema, SYSTEM_SCHEMA};

/// `[access]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    /// Users with one of these roles are administrators.
    #[serde(default = "default_admin_roles")]
    pub admin_roles: Vec<String>,
    #[serde(default)]
    pub rule: Vec<RuleConfig>,
}

impl Default for AccessConfig {
    fn default() -> Self {
        Self {
            admin_roles: default_admin_roles(),
            rule: vec![],
        }
    }
}

fn default_admin_roles() -> Vec<String> {
    vec!["admin".into()]
}

/// `[[access.rule]]`: whom it is for, which tables, and what they get.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// User names the rule applies to; with `roles` absent too, it applies to everyone.
    #[serde(default)]
    pub users: Option<Vec<String>>,
    #[serde(default)]
    pub roles: Option<Vec<String>>,
    /// Patterns with `*` (any run of characters); default `*`.
    #[serde(default = "any")]
    pub catalog: String,
    #[serde(default = "any")]
    pub schema: String,
    #[serde(default = "any")]
    pub table: String,
    /// false denies the matching tables.
    #[serde(default = "yes")]
    pub allow: bool,
    /// true also lets the users write the matching tables (`INSERT`, `COPY … TO`,
    /// `CREATE TABLE … AS`, `DROP TABLE`, ingest) of writable sources.
    #[serde(default)]
    pub write: bool,
    /// An SQL predicate over the table's columns added to every scan of it.
    #[serde(default)]
    pub row_filter: Option<String>,
    /// column -> SQL expression that replaces it (e.g. `'***'`, `left(email, 2) || '…'`).
    #[serde(default)]
    pub masks: BTreeMap<String, String>,
}

fn any() -> String {
    "*".into()
}
fn yes() -> bool {
    true
}

/// A fully named table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableName<'a> {
    pub catalog: &'a str,
    pub schema: &'a str,
    pub table: &'a str,
}

impl std::fmt::Display for TableName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.catalog, self.schema, self.table)
    }
}

/// What a user gets of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Deny,
    /// Readable; the predicate is added to every scan and the masked columns replaced.
    Allow {
        row_filter: Option<String>,
        masks: BTreeMap<String, String>,
    },
}

impl Decision {
    fn plain() -> Self {
        Decision::Allow {
            row_filter: None,
            masks: BTreeMap::new(),
        }
    }
}

/// The rules of the whole server; cheap to clone into each query's [`UserAccess`].
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    config: Arc<AccessConfig>,
}

impl AccessPolicy {
    pub fn new(config: AccessConfig) -> Self {
        Self {
            config: Arc::new(config),
        }
    }

    /// The access of one user for one query; None = unauthenticated server (all open).
    pub fn for_user(&self, user: Option<(&str, &[String])>) -> Arc<UserAccess> {
        let Some((name, roles)) = user else {
            return Arc::new(UserAccess {
                name: None,
                roles: vec![],
                admin: true,
                policy: self.clone(),
            });
        };
        let admin = roles.iter().any(|r| self.config.admin_roles.contains(r));
        Arc::new(UserAccess {
            name: Some(name.to_string()),
            roles: roles.to_vec(),
            admin,
            policy: self.clone(),
        })
    }
}

/// One user's rights, consulted while a query is planned.
#[derive(Debug)]
pub struct UserAccess {
    name: Option<String>,
    roles: Vec<String>,
    admin: bool,
    policy: AccessPolicy,
}

impl UserAccess {
    pub fn user(&self) -> Option<&str> {
        self.name.as_deref()
    }

    pub fn is_admin(&self) -> bool {
        self.admin
    }

    /// What this user gets of `table`.
    pub fn decide(&self, table: TableName<'_>) -> Decision {
        if self.admin {
            return Decision::plain();
        }
        if table.schema == SYSTEM_SCHEMA {
            return match (table.table, &self.name) {
                ("queries", Some(name)) => Decision::Allow {
                    row_filter: Some(format!("\"user\" = '{}'", name.replace('\'', "''"))),
                    masks: BTreeMap::new(),
                },
                _ => Decision::Deny,
            };
        }
        if is_catalog_schema(table.schema) {
            // Lists only what the user may read (see catalog_view).
            return Decision::plain();
        }
        let rules = &self.policy.config.rule;
        if rules.is_empty() {
            return Decision::plain();
        }
        let rule = rules
            .iter()
            .find(|r| self.matches_user(r) && matches_table(r, table));
        match rule {
            Some(r) if r.allow => Decision::Allow {
                row_filter: r.row_filter.clone(),
                masks: r.masks.clone(),
            },
            _ => Decision::Deny,
        }
    }

    /// Whether the user may write `table`: administrators may; anyone else needs a
    /// first matching rule with `allow` and `write` (without rules, nobody else may).
    pub fn may_write(&self, table: TableName<'_>) -> bool {
        if self.admin {
            return true;
        }
        if table.schema == SYSTEM_SCHEMA || is_catalog_schema(table.schema) {
            return false;
        }
        let rules = &self.policy.config.rule;
        rules
            .iter()
            .find(|r| self.matches_user(r) && matches_table(r, table))
            .is_some_and(|r| r.allow && r.write)
    }

    /// Whether the user may see that a schema exists: it may read something in it.
    pub fn sees_schema(&self, catalog: &str, schema: &str) -> bool {
        if self.admin || is_catalog_schema(schema) {
            return true;
        }
        if schema == SYSTEM_SCHEMA {
            return self.name.is_some();
        }
        let rules = &self.policy.config.rule;
        rules.is_empty()
            || rules.iter().any(|r| {
                r.allow
                    && self.matches_user(r)
                    && glob(&r.catalog, catalog)
                    && glob(&r.schema, schema)
            })
    }

    /// Whether the user may see that a catalog exists.
    pub fn sees_catalog(&self, catalog: &str) -> bool {
        let rules = &self.policy.config.rule;
        self.admin
            || rules.is_empty()
            || rules
                .iter()
                .any(|r| r.allow && self.matches_user(r) && glob(&r.catalog, catalog))
    }

    fn matches_user(&self, rule: &RuleConfig) -> bool {
        match (&rule.users, &rule.roles) {
            (None, None) => true,
            (users, roles) => {
                let by_name = users
                    .as_ref()
                    .is_some_and(|u| self.name.as_ref().is_some_and(|n| u.contains(n)));
                let by_role = roles
                    .as_ref()
                    .is_some_and(|r| r.iter().any(|role| self.roles.contains(role)));
                by_name || by_role
            }
        }
    }
}

fn matches_table(rule: &RuleConfig, t: TableName<'_>) -> bool {
    glob(&rule.catalog, t.catalog) && glob(&rule.schema, t.schema) && glob(&rule.table, t.table)
}

/// `*` matches any run of characters; everything else itself.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(toml_text: &str) -> AccessPolicy {
        AccessPolicy::new(toml::from_str(toml_text).expect("access config"))
    }

    fn t<'a>(catalog: &'a str, schema: &'a str, table: &'a str) -> TableName<'a> {
        TableName {
            catalog,
            schema,
            table,
        }
    }

    #[test]
    fn globs() {
        assert!(glob("*", "anything"));
        assert!(glob("cust*", "customer"));
        assert!(glob("*omer", "customer"));
        assert!(glob("c*s*r", "customer"));
        assert!(!glob("c*x*r", "customer"));
        assert!(!glob("orders", "order"));
        assert!(!glob("ab*ba", "aba"));
    }

    #[test]
    fn first_matching_rule_decides_and_unmatched_tables_are_denied() {
        let p = policy(
            r#"
            [[rule]]
            roles = ["analyst"]
            schema = "tpch"
            table = "customer"
            row_filter = "c_nationkey = 1"
            masks = { c_phone = "'***'" }
            [[rule]]
            roles = ["analyst"]
            schema = "tpch"
            table = "*"
            [[rule]]
            users = ["ann"]
            table = "secret*"
            allow = false
            "#,
        );
        let analyst = p.for_user(Some(("bob", &["analyst".to_string()])));
        match analyst.decide(t("quiver", "tpch", "customer")) {
            Decision::Allow { row_filter, masks } => {
                assert_eq!(row_filter.as_deref(), Some("c_nationkey = 1"));
                assert_eq!(masks.get("c_phone").map(String::as_str), Some("'***'"));
            }
            Decision::Deny => panic!("analyst may read customer"),
        }
        assert_eq!(
            analyst.decide(t("quiver", "tpch", "orders")),
            Decision::plain()
        );
        assert_eq!(analyst.decide(t("quiver", "pg", "orders")), Decision::Deny);
        assert!(analyst.sees_schema("quiver", "tpch") && !analyst.sees_schema("quiver", "pg"));
        let ann = p.for_user(Some(("ann", &[])));
        assert_eq!(ann.decide(t("quiver", "tpch", "secrets")), Decision::Deny);
        assert!(!ann.sees_catalog("quiver"));
    }

    #[test]
    fn system_tables_are_for_admins_and_own_queries() {
        let p = policy("");
        let admin = p.for_user(Some(("root", &["admin".to_string()])));
        assert_eq!(
            admin.decide(t("quiver", "system", "workers")),
            Decision::plain()
        );
        let user = p.for_user(Some(("o'brien", &[])));
        assert_eq!(
            user.decide(t("quiver", "system", "workers")),
            Decision::Deny
        );
        match user.decide(t("quiver", "system", "queries")) {
            Decision::Allow { row_filter, .. } => {
                assert_eq!(row_filter.as_deref(), Some("\"user\" = 'o''brien'"))
            }
            Decision::Deny => panic!("own queries are readable"),
        }
        // No rules: every table is readable.
        assert_eq!(
            user.decide(t("quiver", "tpch", "lineitem")),
            Decision::plain()
        );
        // No authentication: everything.
        assert!(p.for_user(None).is_admin());
    }
}
