//! How the statements about virtual datasets are read into [`Command`]s.

use datafusion::common::plan_err;
use datafusion::error::{DataFusionError, Result};
use datafusion::sql::sqlparser::ast::{self, ObjectType, ShowCreateObject, SqlOption, Statement};

use crate::catalog::config::{AccelerateSpec, RefreshMode};
use crate::catalog::Datasets;

use super::Command;

/// `DROP TABLE [IF EXISTS] v [CASCADE]` when `v` is a view of `datasets`: dbt
/// drops relations by the kind its cache read from `pg_tables`, where views are
/// listed too, so a view it drops "as a table" is dropped as the view it is.
pub fn view_drop(statement: &Statement, datasets: &Datasets) -> Option<Command> {
    let Statement::Drop {
        object_type: ast::ObjectType::Table,
        names,
        if_exists,
        ..
    } = statement
    else {
        return None;
    };
    let [one] = names.as_slice() else { return None };
    datasets.view(&datasets.qualify(&one.to_string()).ok()?)?;
    Some(Command::DropView {
        name: one.to_string(),
        if_exists: *if_exists,
    })
}

/// `ALTER TABLE v RENAME TO w` when `v` is a view of `datasets`.
pub fn view_rename(statement: &Statement, datasets: &Datasets) -> Option<Command> {
    let Statement::AlterTable(alter) = statement else {
        return None;
    };
    let [ast::AlterTableOperation::RenameTable {
        table_name: ast::RenameTableNameKind::To(to) | ast::RenameTableNameKind::As(to),
    }] = alter.operations.as_slice()
    else {
        return None;
    };
    datasets.view(&datasets.qualify(&alter.name.to_string()).ok()?)?;
    Some(Command::RenameView {
        name: alter.name.to_string(),
        to: to.to_string(),
    })
}

/// The command `statement` is, if it is one (None: an ordinary statement).
pub fn recognize(statement: &Statement) -> Option<Result<Command>> {
    Some(match statement {
        Statement::CreateView(v) => create_view(v),
        Statement::CreateSchema {
            schema_name,
            if_not_exists,
            ..
        } => match schema_name {
            ast::SchemaName::Simple(name) => Ok(Command::CreateSchema {
                name: name.to_string(),
                if_not_exists: *if_not_exists,
            }),
            _ => Err(DataFusionError::Plan(
                "CREATE SCHEMA … AUTHORIZATION is not supported: Quiver's users and rights come from its config".into(),
            )),
        },
        Statement::Drop {
            object_type: ObjectType::Schema,
            if_exists,
            names,
            cascade,
            ..
        } => match names.as_slice() {
            [one] => Ok(Command::DropSchema {
                name: one.to_string(),
                if_exists: *if_exists,
                cascade: *cascade,
            }),
            _ => Err(DataFusionError::Plan(
                "DROP SCHEMA takes one schema at a time".into(),
            )),
        },
        Statement::Drop {
            object_type: ObjectType::View | ObjectType::MaterializedView,
            if_exists,
            names,
            ..
        } => match names.as_slice() {
            [one] => Ok(Command::DropView {
                name: one.to_string(),
                if_exists: *if_exists,
            }),
            _ => Err(DataFusionError::Plan(
                "DROP VIEW takes one view at a time".into(),
            )),
        },
        Statement::AlterTable(alter) => {
            let [ast::AlterTableOperation::SetOptionsParens { options }] =
                alter.operations.as_slice()
            else {
                return None;
            };
            if !options.iter().any(|o| matches!(o, SqlOption::KeyValue { key, .. } if key.value.eq_ignore_ascii_case("accelerated"))) {
                return None;
            }
            accelerate(alter.name.to_string(), options)
        }
        Statement::ShowCreate {
            obj_type: ShowCreateObject::View,
            obj_name,
        } => Ok(Command::ShowCreateView {
            name: obj_name.to_string(),
        }),
        Statement::Call(f)
            if f.name
                .to_string()
                .eq_ignore_ascii_case("refresh_acceleration") =>
        {
            refresh_call(f)
        }
        _ => return None,
    })
}

/// `REFRESH ACCELERATION name` in the equivalent form the SQL parser reads
/// (`CALL refresh_acceleration('name')`), or None for any other text.
pub fn rewrite_refresh(sql: &str) -> Option<String> {
    let text = sql.trim().trim_end_matches(';').trim();
    let mut words = text.split_whitespace();
    let (first, second) = (words.next()?, words.next()?);
    if !(first.eq_ignore_ascii_case("refresh") && second.eq_ignore_ascii_case("acceleration")) {
        return None;
    }
    let name = words.collect::<Vec<_>>().join(" ");
    Some(format!(
        "CALL refresh_acceleration('{}')",
        name.replace('\'', "''")
    ))
}

fn create_view(v: &ast::CreateView) -> Result<Command> {
    if !v.columns.is_empty() {
        return Err(DataFusionError::Plan(
            "CREATE VIEW with a column list is not supported; name the columns in the query".into(),
        ));
    }
    if v.temporary {
        return Err(DataFusionError::Plan(
            "temporary views are not supported: views are shared by every session".into(),
        ));
    }
    let options = match &v.options {
        ast::CreateTableOptions::None => vec![],
        ast::CreateTableOptions::With(o) | ast::CreateTableOptions::Options(o) => o.clone(),
        _ => return plan_err!("view options go in WITH (…)"),
    };
    let accelerate = match (v.materialized, options.is_empty()) {
        (true, _) => Some(spec_of(&options, false)?),
        (false, true) => None,
        (false, false) => {
            return Err(DataFusionError::Plan(
                "WITH (…) options are for MATERIALIZED views".into(),
            ))
        }
    };
    if v.if_not_exists && v.or_replace {
        return Err(DataFusionError::Plan(
            "use OR REPLACE or IF NOT EXISTS, not both".into(),
        ));
    }
    Ok(Command::CreateView {
        name: v.name.to_string(),
        sql: v.query.to_string(),
        or_replace: v.or_replace,
        accelerate,
    })
}

fn accelerate(name: String, options: &[SqlOption]) -> Result<Command> {
    let on = options.iter().find_map(|o| match o {
        SqlOption::KeyValue { key, value } if key.value.eq_ignore_ascii_case("accelerated") => {
            Some(value.to_string())
        }
        _ => None,
    });
    match on
        .as_deref()
        .map(|v| v.trim_matches('\'').to_ascii_lowercase())
    {
        Some(v) if v == "false" || v == "off" => {
            if options.len() > 1 {
                return Err(DataFusionError::Plan(
                    "SET (accelerated = false) takes no other options".into(),
                ));
            }
            Ok(Command::Accelerate { name, spec: None })
        }
        Some(v) if v == "true" || v == "on" => Ok(Command::Accelerate {
            name,
            spec: Some(spec_of(options, true)?),
        }),
        other => plan_err!(
            "accelerated must be true or false, not {}",
            other.unwrap_or_default()
        ),
    }
}

/// Reads `refresh_secs`, `mode`, `time_column` and `sort_by` (and, with
/// `allow_flag`, `accelerated`); anything else is an error that names it.
fn spec_of(options: &[SqlOption], allow_flag: bool) -> Result<AccelerateSpec> {
    let mut spec = AccelerateSpec {
        refresh_secs: 0,
        mode: RefreshMode::Full,
        time_column: None,
        sort_by: vec![],
        slot: None,
        publication: None,
        filter: None,
    };
    for option in options {
        let SqlOption::KeyValue { key, value } = option else {
            return plan_err!("unsupported option {option}");
        };
        let text = match value {
            ast::Expr::Value(v) => match &v.value {
                ast::Value::SingleQuotedString(s) | ast::Value::DoubleQuotedString(s) => s.clone(),
                ast::Value::Number(n, _) => n.clone(),
                ast::Value::Boolean(b) => b.to_string(),
                other => other.to_string(),
            },
            ast::Expr::Identifier(i) => i.value.clone(),
            other => other.to_string(),
        };
        match key.value.to_ascii_lowercase().as_str() {
            "accelerated" if allow_flag => {}
            "refresh_secs" => {
                spec.refresh_secs = text.parse().map_err(|_| DataFusionError::Plan(format!("refresh_secs must be a whole number of seconds, not {text}")))?
            }
            "mode" => {
                spec.mode = match text.to_ascii_lowercase().as_str() {
                    "full" => RefreshMode::Full,
                    "append" => RefreshMode::Append,
                    "changes" => RefreshMode::Changes,
                    _ => return plan_err!("mode must be 'full', 'append' or 'changes', not '{text}'"),
                }
            }
            "time_column" => spec.time_column = Some(text),
            "sort_by" => spec.sort_by = text.split(',').map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect(),
            "slot" => spec.slot = Some(text),
            "publication" => spec.publication = Some(text),
            "filter" => spec.filter = Some(text),
            other => {
                return plan_err!(
                    "unknown acceleration option '{other}' (known: refresh_secs, mode, time_column, sort_by, slot, publication, filter)"
                )
            }
        }
    }
    spec.validate("the dataset")
        .map_err(DataFusionError::Plan)?;
    Ok(spec)
}

fn refresh_call(f: &ast::Function) -> Result<Command> {
    let usage = || {
        DataFusionError::Plan(
            "usage: REFRESH ACCELERATION name (or CALL refresh_acceleration('name'))".into(),
        )
    };
    let ast::FunctionArguments::List(list) = &f.args else {
        return Err(usage());
    };
    let [ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(ast::Expr::Value(v)))] =
        list.args.as_slice()
    else {
        return Err(usage());
    };
    match &v.value {
        ast::Value::SingleQuotedString(s) if !s.trim().is_empty() => Ok(Command::Refresh {
            name: s.trim().to_string(),
        }),
        _ => Err(usage()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(sql: &str) -> Option<Result<Command>> {
        let dialect = datafusion::sql::sqlparser::dialect::GenericDialect {};
        let statements =
            datafusion::sql::sqlparser::parser::Parser::parse_sql(&dialect, sql).expect("parses");
        recognize(&statements[0])
    }

    #[test]
    fn statements_become_commands() {
        let c = parse("CREATE OR REPLACE VIEW s.v AS SELECT a FROM t WHERE a > 1")
            .expect("a command")
            .expect("valid");
        assert_eq!(
            c,
            Command::CreateView {
                name: "s.v".into(),
                sql: "SELECT a FROM t WHERE a > 1".into(),
                or_replace: true,
                accelerate: None
            }
        );
        let c = parse("CREATE MATERIALIZED VIEW v WITH (refresh_secs = 60, mode = 'append', time_column = 'ts', sort_by = 'a, b') AS SELECT 1")
            .expect("a command")
            .expect("valid");
        let Command::CreateView {
            accelerate: Some(spec),
            ..
        } = c
        else {
            panic!("materialized view expected")
        };
        assert_eq!(
            (spec.refresh_secs, spec.mode, spec.sort_by.len()),
            (60, RefreshMode::Append, 2)
        );
        assert_eq!(
            parse("DROP VIEW IF EXISTS v").expect("cmd").expect("ok"),
            Command::DropView {
                name: "v".into(),
                if_exists: true
            }
        );
        let c = parse("ALTER TABLE pg.public.orders SET (accelerated = true, refresh_secs = 300)")
            .expect("cmd")
            .expect("ok");
        assert!(matches!(
            c,
            Command::Accelerate {
                spec: Some(AccelerateSpec {
                    refresh_secs: 300,
                    ..
                }),
                ..
            }
        ));
        let c = parse("ALTER TABLE t SET (accelerated = false)")
            .expect("cmd")
            .expect("ok");
        assert_eq!(
            c,
            Command::Accelerate {
                name: "t".into(),
                spec: None
            }
        );
        assert!(parse("SELECT 1").is_none());
        assert!(
            parse("ALTER TABLE t SET (fillfactor = 70)").is_none(),
            "other ALTERs stay refused as DDL"
        );
        let sql = rewrite_refresh("refresh  acceleration pg.public.orders;").expect("rewritten");
        assert_eq!(
            parse(&sql).expect("cmd").expect("ok"),
            Command::Refresh {
                name: "pg.public.orders".into()
            }
        );
        assert!(rewrite_refresh("REFRESH pg").is_none());
    }

    proptest::proptest! {
        /// Whatever the name, `REFRESH ACCELERATION name` becomes a refresh of exactly that
        /// name: quotes in it cannot end the string it is put in.
        #[test]
        fn refresh_names_survive_the_rewrite(name in "[A-Za-z0-9_.'\"`;()-]{1,24}") {
            let sql = rewrite_refresh(&format!("REFRESH ACCELERATION {name}")).expect("rewritten");
            let dialect = datafusion::sql::sqlparser::dialect::GenericDialect {};
            let statements = datafusion::sql::sqlparser::parser::Parser::parse_sql(&dialect, &sql).expect("parses");
            proptest::prop_assert_eq!(statements.len(), 1);
            let expected = name.trim_end_matches(';').trim().to_string();
            match recognize(&statements[0]) {
                Some(Ok(Command::Refresh { name: got })) => proptest::prop_assert_eq!(got, expected),
                other => proptest::prop_assert!(expected.is_empty(), "{other:?}"),
            }
        }
    }

    #[test]
    fn bad_options_name_the_problem() {
        let e = parse("ALTER TABLE t SET (accelerated = true, mode = 'append')")
            .expect("cmd")
            .unwrap_err()
            .to_string();
        assert!(e.contains("time_column"), "{e}");
        let e = parse("ALTER TABLE t SET (accelerated = true, refresh = 3)")
            .expect("cmd")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown acceleration option 'refresh'"), "{e}");
        let e = parse("CREATE VIEW v WITH (refresh_secs = 1) AS SELECT 1")
            .expect("cmd")
            .unwrap_err()
            .to_string();
        assert!(e.contains("MATERIALIZED"), "{e}");
    }
}
