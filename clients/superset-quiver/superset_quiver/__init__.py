"""Superset engine spec for Quiver over Arrow Flight SQL.

Quiver plans SQL with Apache DataFusion, so time grains are DataFusion's
`date_trunc` (the same units PostgreSQL has) and time-range bounds are typed
literals. Registered through the `superset.db_engine_specs` entry point.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import types

from superset.constants import TimeGrain
from superset.db_engine_specs.base import BaseEngineSpec


class QuiverFlightSqlEngineSpec(BaseEngineSpec):
    """Quiver's Flight SQL port, through flightsql-dbapi's `datafusion` dialect."""

    engine = "datafusion"
    engine_name = "Quiver (Flight SQL)"
    default_driver = "flightsql"
    sqlalchemy_uri_placeholder = "datafusion://user:password@host:50051?insecure=true"

    allows_joins = True
    allows_subqueries = True
    allows_alias_in_select = True
    allows_alias_in_orderby = True
    supports_dynamic_schema = False

    _time_grain_expressions = {
        None: "{col}",
        TimeGrain.SECOND: "date_trunc('second', {col})",
        TimeGrain.FIVE_SECONDS: "date_bin(INTERVAL '5 seconds', {col}, TIMESTAMP '1970-01-01 00:00:00')",
        TimeGrain.THIRTY_SECONDS: "date_bin(INTERVAL '30 seconds', {col}, TIMESTAMP '1970-01-01 00:00:00')",
        TimeGrain.MINUTE: "date_trunc('minute', {col})",
        TimeGrain.FIVE_MINUTES: "date_bin(INTERVAL '5 minutes', {col}, TIMESTAMP '1970-01-01 00:00:00')",
        TimeGrain.TEN_MINUTES: "date_bin(INTERVAL '10 minutes', {col}, TIMESTAMP '1970-01-01 00:00:00')",
        TimeGrain.FIFTEEN_MINUTES: "date_bin(INTERVAL '15 minutes', {col}, TIMESTAMP '1970-01-01 00:00:00')",
        TimeGrain.THIRTY_MINUTES: "date_bin(INTERVAL '30 minutes', {col}, TIMESTAMP '1970-01-01 00:00:00')",
        TimeGrain.HOUR: "date_trunc('hour', {col})",
        TimeGrain.SIX_HOURS: "date_bin(INTERVAL '6 hours', {col}, TIMESTAMP '1970-01-01 00:00:00')",
        TimeGrain.DAY: "date_trunc('day', {col})",
        TimeGrain.WEEK: "date_trunc('week', {col})",
        TimeGrain.WEEK_STARTING_SUNDAY: "date_trunc('week', {col} + INTERVAL '1 day') - INTERVAL '1 day'",
        TimeGrain.WEEK_STARTING_MONDAY: "date_trunc('week', {col})",
        TimeGrain.WEEK_ENDING_SATURDAY: "date_trunc('week', {col} + INTERVAL '1 day') + INTERVAL '5 days'",
        TimeGrain.WEEK_ENDING_SUNDAY: "date_trunc('week', {col}) + INTERVAL '6 days'",
        TimeGrain.MONTH: "date_trunc('month', {col})",
        TimeGrain.QUARTER: "date_trunc('quarter', {col})",
        TimeGrain.YEAR: "date_trunc('year', {col})",
    }

    @classmethod
    def epoch_to_dttm(cls) -> str:
        return "to_timestamp({col})"

    @classmethod
    def epoch_ms_to_dttm(cls) -> str:
        return "to_timestamp_millis({col})"

    @classmethod
    def convert_dttm(
        cls, target_type: str, dttm: datetime, db_extra: dict[str, Any] | None = None
    ) -> str | None:
        sqla_type = cls.get_sqla_column_type(target_type)
        if isinstance(sqla_type, types.Date):
            return f"CAST('{dttm.date().isoformat()}' AS DATE)"
        if isinstance(sqla_type, (types.DateTime, types.TIMESTAMP)):
            return f"CAST('{dttm.isoformat(sep=' ', timespec='microseconds')}' AS TIMESTAMP)"
        return None
