//! Bound parameters of the extended protocol, as the values a plan takes.

use std::sync::Arc;

use datafusion::logical_expr::LogicalPlan;
use pgwire::api::portal::Portal;
use pgwire::api::Type;
use pgwire::error::PgWireResult;
use quiver_worker::status::from_datafusion;

use super::{errors, Parsed};

/// The bound values, as the types the plan expects. Decoded as those types when
/// arrow-pg can; else as the types the client sent (an `int8` for a `numeric`
/// column, say) and then cast, with an error that names the parameter. A NULL
/// stays a NULL of the expected type.
pub(super) fn decode_parameters(
    portal: &Portal<Parsed>,
    expected: &[Option<datafusion::arrow::datatypes::DataType>],
) -> PgWireResult<datafusion::common::ParamValues> {
    let portal = &nulls_as_text(portal);
    let refs: Vec<Option<&datafusion::arrow::datatypes::DataType>> =
        expected.iter().map(|t| t.as_ref()).collect();
    let values = match arrow_pg::datatypes::df::deserialize_parameters(portal, &refs) {
        Ok(v) => v,
        Err(_) => {
            arrow_pg::datatypes::df::deserialize_parameters(portal, &vec![None; expected.len()])?
        }
    };
    let datafusion::common::ParamValues::List(values) = values else {
        return Ok(values);
    };
    let mut cast = Vec::with_capacity(values.len());
    for (i, v) in values.into_iter().enumerate() {
        let value = match expected.get(i) {
            Some(Some(t)) if v.value().data_type() != *t => v.value().cast_to(t).map_err(|e| {
                errors::user_error(
                    "22023",
                    format!("parameter ${} cannot be converted to {t}: {e}", i + 1),
                )
            })?,
            _ => v.value().clone(),
        };
        cast.push(datafusion::common::metadata::ScalarAndMetadata::new(
            value, None,
        ));
    }
    Ok(datafusion::common::ParamValues::List(cast))
}

/// `portal` with NULL parameters of no (or unknown) type declared as `text`:
/// arrow-pg decodes an untyped NULL to nothing at all, which shifts every later
/// parameter (`SELECT $1, $2` bound to NULL, 5 failed with "no value for $2").
fn nulls_as_text(portal: &Portal<Parsed>) -> Portal<Parsed> {
    let mut types = portal.statement.parameter_types.clone();
    types.resize(portal.parameters.len().max(types.len()), None);
    for (i, value) in portal.parameters.iter().enumerate() {
        let untyped = types[i].is_none() || types[i].as_ref() == Some(&Type::UNKNOWN);
        if value.is_none() && untyped {
            types[i] = Some(Type::TEXT);
        }
    }
    let statement = pgwire::api::stmt::StoredStatement::new(
        portal.statement.id.clone(),
        portal.statement.statement.clone(),
        types,
    );
    // Portal is non-exhaustive: start from an empty one and set its public fields.
    let mut patched = Portal::<Parsed>::default();
    patched.name = portal.name.clone();
    patched.statement = Arc::new(statement);
    patched.parameter_format = portal.parameter_format.clone();
    patched.parameters = portal.parameters.clone();
    patched.result_column_format = portal.result_column_format.clone();
    patched.state = portal.state.clone();
    patched
}

/// The inferred type of each `$1..$n` (None where unknown).
pub(super) fn parameter_types(
    plan: &LogicalPlan,
) -> PgWireResult<Vec<Option<datafusion::arrow::datatypes::DataType>>> {
    crate::placeholders::positional_types(plan)
        .map_err(|e| errors::to_pg(&from_datafusion(&e), None))
}
