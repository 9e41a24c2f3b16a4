"""Writes the TPC-H Parquet tables of <tpch-dir> as Delta tables (deltalake) and as
Iceberg tables (pyiceberg, SQL catalog on SQLite) under <out-dir>, and a table of
10,000 one-row files in each format (partitioned by id), for
coordinator/benches/lakehouse.rs. Tables already written are kept.

The copies have the Parquet tables' layout, so the formats are compared and not
the files: one data file per Parquet file (one commit each), snappy as Quiver's
own files (pyiceberg's default would be zstd).

Usage: bench-lakehouse.py <tpch-dir> <out-dir>
"""

import glob
import os
import sys

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import write_deltalake
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import IdentityTransform
from pyiceberg.types import LongType, NestedField

TABLES = ["nation", "region", "part", "supplier", "partsupp", "customer", "orders", "lineitem"]
MANY = 10_000


def plain(table: pa.Table) -> pa.Table:
    """String and binary views as plain strings and binaries (what both writers take)."""
    fields = []
    for f in table.schema:
        ty = {pa.string_view(): pa.string(), pa.binary_view(): pa.binary()}.get(f.type, f.type)
        fields.append(pa.field(f.name, ty, f.nullable))
    return table.cast(pa.schema(fields))


def main(tpch: str, out: str) -> None:
    os.makedirs(os.path.join(out, "iceberg"), exist_ok=True)
    cat = SqlCatalog("bench", uri=f"sqlite:///{out}/iceberg/catalog.db", warehouse=f"file://{out}/iceberg/warehouse")
    if ("tpch",) not in cat.list_namespaces():
        cat.create_namespace("tpch")
    existing = {t[1] for t in cat.list_tables("tpch")}
    for t in TABLES:
        parts = [plain(pq.read_table(f)) for f in sorted(glob.glob(os.path.join(tpch, t, "*.parquet")))]
        delta = os.path.join(out, "delta", t)
        if not os.path.exists(os.path.join(delta, "_delta_log")):
            for part in parts:
                write_deltalake(delta, part, mode="append")
        if t not in existing:
            table = cat.create_table(f"tpch.{t}", schema=parts[0].schema,
                                     properties={"write.parquet.compression-codec": "snappy"})
            for part in parts:
                table.append(part)
        print(f"{t}: {sum(p.num_rows for p in parts)} rows in {len(parts)} files", flush=True)
    many = pa.table({"id": pa.array(range(MANY), pa.int64()), "v": pa.array(range(MANY), pa.int64())})
    delta = os.path.join(out, "delta-many", "many")
    if not os.path.exists(os.path.join(delta, "_delta_log")):
        write_deltalake(delta, many, partition_by=["id"])
    if ("many",) not in cat.list_namespaces():
        cat.create_namespace("many")
    if "many" not in {t[1] for t in cat.list_tables("many")}:
        spec = PartitionSpec(PartitionField(source_id=1, field_id=1000, transform=IdentityTransform(), name="id"))
        schema = Schema(NestedField(1, "id", LongType()), NestedField(2, "v", LongType()))
        cat.create_table("many.many", schema=schema, partition_spec=spec).append(many)
    print(f"many: {MANY} files in each format", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
