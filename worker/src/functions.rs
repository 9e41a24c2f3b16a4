//! SQL functions Quiver adds to DataFusion's. The coordinator and every worker
//! register them ([`register`]), so a plan that uses one decodes on a worker.
//!
//! - `quiver_interval_mul(interval, number)`: an interval times a number, as
//!   PostgreSQL computes it (`INTERVAL '5 seconds' * FLOOR(…)`, which BI tools'
//!   time grains write; DataFusion has no such operator). The coordinator turns
//!   `interval * number` written in SQL into this call.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, Float64Array, IntervalMonthDayNanoArray};
use datafusion::arrow::datatypes::{
    DataType, IntervalMonthDayNano, IntervalMonthDayNanoType, IntervalUnit,
};
use datafusion::common::plan_err;
use datafusion::error::Result;
use datafusion::execution::FunctionRegistry;
use datafusion::execution::SessionState;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// The name of the interval multiplication.
pub const INTERVAL_MUL: &str = "quiver_interval_mul";

/// Registers Quiver's functions on `state`.
pub fn register(state: &mut SessionState) -> Result<()> {
    state.register_udf(Arc::new(ScalarUDF::new_from_impl(IntervalMul::new())))?;
    Ok(())
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct IntervalMul {
    signature: Signature,
}

impl IntervalMul {
    fn new() -> Self {
        Self {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

const INTERVAL: DataType = DataType::Interval(IntervalUnit::MonthDayNano);
const NANOS_PER_DAY: f64 = 86_400_000_000_000.0;

/// `i * f` the way PostgreSQL multiplies intervals: fractional months spill into
/// days (30 a month), fractional days into time.
fn multiply(i: IntervalMonthDayNano, f: f64) -> IntervalMonthDayNano {
    let months = i.months as f64 * f;
    let whole_months = months.trunc();
    let days = i.days as f64 * f + (months - whole_months) * 30.0;
    let whole_days = days.trunc();
    let nanos = i.nanoseconds as f64 * f + (days - whole_days) * NANOS_PER_DAY;
    IntervalMonthDayNano::new(whole_months as i32, whole_days as i32, nanos.round() as i64)
}

impl ScalarUDFImpl for IntervalMul {
    fn name(&self) -> &str {
        INTERVAL_MUL
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match (&args[0], &args[1]) {
            (DataType::Interval(_) | DataType::Null, t) if t.is_numeric() || t.is_null() => {
                Ok(INTERVAL)
            }
            (a, b) => plan_err!(
                "cannot multiply {a} by {b}: {INTERVAL_MUL} takes an interval and a number"
            ),
        }
    }

    fn invoke_with_args(&self, call: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = call.number_rows;
        let interval = call.args[0].clone().into_array(rows)?;
        let interval = datafusion::arrow::compute::cast(&interval, &INTERVAL)?;
        let factor = call.args[1].clone().into_array(rows)?;
        let factor = datafusion::arrow::compute::cast(&factor, &DataType::Float64)?;
        let interval = interval.as_primitive::<IntervalMonthDayNanoType>();
        let factor: &Float64Array = factor.as_primitive();
        let out: IntervalMonthDayNanoArray = (0..rows)
            .map(|r| {
                (!interval.is_null(r) && !factor.is_null(r))
                    .then(|| multiply(interval.value(r), factor.value(r)))
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_multiply_as_in_postgresql() {
        let five_s = IntervalMonthDayNano::new(0, 0, 5_000_000_000);
        assert_eq!(
            multiply(five_s, 3.0),
            IntervalMonthDayNano::new(0, 0, 15_000_000_000)
        );
        // 1 month * 1.5 = 1 month 15 days; 1 day * 0.5 = 12 hours.
        assert_eq!(
            multiply(IntervalMonthDayNano::new(1, 0, 0), 1.5),
            IntervalMonthDayNano::new(1, 15, 0)
        );
        assert_eq!(
            multiply(IntervalMonthDayNano::new(0, 1, 0), 0.5),
            IntervalMonthDayNano::new(0, 0, 43_200_000_000_000)
        );
    }

    #[tokio::test]
    async fn the_function_runs_in_sql() -> Result<()> {
        let ctx = datafusion::prelude::SessionContext::new();
        let mut state = ctx.state();
        register(&mut state)?;
        let ctx = datafusion::prelude::SessionContext::new_with_state(state);
        let batches = ctx
            .sql("SELECT TIMESTAMP '2020-01-01 00:00:00' + quiver_interval_mul(INTERVAL '5 seconds', floor(7.0 / 5)) AS t")
            .await?
            .collect()
            .await?;
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)?.to_string();
        assert!(text.contains("2020-01-01T00:00:05"), "{text}");
        Ok(())
    }
}
