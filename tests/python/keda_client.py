"""A KEDA external-scaler client generated from proto/keda/externalscaler.proto
(grpcio-tools, at run time), as KEDA's operator calls a scaler: prints what the
scaler answers to IsActive, GetMetricSpec, GetMetrics and the first StreamIsActive
message, as one JSON object."""
import importlib
import json
import pathlib
import sys
import tempfile

from grpc_tools import protoc
import grpc

addr, proto = sys.argv[1], pathlib.Path(sys.argv[2])
out = tempfile.mkdtemp()
rc = protoc.main(["protoc", f"-I{proto.parent}", f"--python_out={out}", f"--grpc_python_out={out}", str(proto)])
assert rc == 0, f"protoc failed: {rc}"
sys.path.insert(0, out)
pb = importlib.import_module("externalscaler_pb2")
rpc = importlib.import_module("externalscaler_pb2_grpc")

channel = grpc.insecure_channel(addr)
stub = rpc.ExternalScalerStub(channel)
ref = pb.ScaledObjectRef(name="quiver-workers", namespace="default", scalerMetadata={"scalerAddress": addr})
active = stub.IsActive(ref, timeout=5).result
spec = stub.GetMetricSpec(ref, timeout=5).metricSpecs
metric = spec[0].metricName
values = stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref, metricName=metric), timeout=5).metricValues
stream = stub.StreamIsActive(ref, timeout=5)
first = next(iter(stream)).result
stream.cancel()
try:
    stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref, metricName="no_such_metric"), timeout=5)
    unknown = "answered"
except grpc.RpcError as e:
    unknown = f"{e.code().name}: {e.details()}"
print(json.dumps({
    "active": active,
    "spec": [{"name": s.metricName, "target": s.targetSize, "target_float": s.targetSizeFloat} for s in spec],
    "values": [{"name": v.metricName, "value": v.metricValue, "value_float": v.metricValueFloat} for v in values],
    "stream_first": first,
    "unknown_metric": unknown,
}))
