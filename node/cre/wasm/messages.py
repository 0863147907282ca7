"""The protobuf messages a CRE v2 workflow and its host exchange, defined here.

The guest (a workflow built with `@chainlink/cre-sdk`) speaks protobuf on every host call:
the `ExecuteRequest` in its argv, the `ExecutionResult` it sends back, capability requests and
responses, secrets. We only need the messages the node serves, so they are declared below in a
compact form of our own (one line per message: `Name: field type number [oneof]`, a leading `*`
for repeated fields, maps as repeated key/value entry messages, which is the same wire format)
and turned into `google.protobuf` classes at import. Nothing is generated or copied from the
SDK's (BUSL-licensed) package; the field numbers are the public wire contract.

Enums are declared as int32: same varint on the wire, and the host only compares numbers.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import (
    any_pb2,
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    empty_pb2,
    message_factory,
    timestamp_pb2,
)

_SCALARS = {
    "string": descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
    "bytes": descriptor_pb2.FieldDescriptorProto.TYPE_BYTES,
    "bool": descriptor_pb2.FieldDescriptorProto.TYPE_BOOL,
    "int32": descriptor_pb2.FieldDescriptorProto.TYPE_INT32,
    "int64": descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
    "uint32": descriptor_pb2.FieldDescriptorProto.TYPE_UINT32,
    "uint64": descriptor_pb2.FieldDescriptorProto.TYPE_UINT64,
    "double": descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE,
}

# package -> message lines. A type without a dot is in the same package.
_SCHEMA: dict[str, list[str]] = {
    "values.v1": [
        "Value: string_value string 1 value | bool_value bool 2 value | bytes_value bytes 3 value"
        " | map_value Map 4 value | list_value List 5 value | decimal_value Decimal 6 value"
        " | int64_value int64 7 value | bigint_value BigInt 9 value"
        " | time_value google.protobuf.Timestamp 10 value | float64_value double 11 value"
        " | uint64_value uint64 12 value",
        "MapEntry: key string 1 | value Value 2",
        "Map: *fields MapEntry 1",
        "List: *fields Value 2",
        "BigInt: abs_val bytes 1 | sign int64 2",
        "Decimal: coefficient BigInt 1 | exponent int32 2",
    ],
    "sdk.v1alpha": [
        "Trigger: id uint64 1 | payload google.protobuf.Any 2",
        "ExecuteRequest: config bytes 1 | subscribe google.protobuf.Empty 2 request"
        " | trigger Trigger 3 request | max_response_size uint64 4 | pre_hook Trigger 5 request",
        # requirements (a message: TEE constraints) kept as bytes: the node only checks it is absent
        "TriggerSubscription: id string 1 | payload google.protobuf.Any 2 | method string 3 | requirements bytes 4"
        " | pre_hook bool 5",
        "TriggerSubscriptionRequest: *subscriptions TriggerSubscription 1",
        "ExecutionResult: value values.v1.Value 1 result | error string 2 result"
        " | trigger_subscriptions TriggerSubscriptionRequest 3 result",
        "CapabilityRequest: id string 1 | payload google.protobuf.Any 2 | method string 3 | callback_id int32 4",
        "CapabilityResponse: payload google.protobuf.Any 1 response | error string 2 response",
        "AwaitCapabilitiesRequest: *ids int32 1",
        "CapabilityResponseEntry: key int32 1 | value CapabilityResponse 2",
        "AwaitCapabilitiesResponse: *responses CapabilityResponseEntry 1",
        "SecretRequest: id string 1 | namespace string 2",
        "GetSecretsRequest: *requests SecretRequest 1 | callback_id int32 2",
        "AwaitSecretsRequest: *ids int32 1",
        "Secret: id string 1 | namespace string 2 | owner string 3 | value string 4",
        "SecretError: id string 1 | namespace string 2 | owner string 3 | error string 4",
        "SecretResponse: secret Secret 1 response | error SecretError 2 response",
        "SecretResponses: *responses SecretResponse 1",
        "SecretResponsesEntry: key int32 1 | value SecretResponses 2",
        "AwaitSecretsResponse: *responses SecretResponsesEntry 1",
        # aggregation: 1 median, 2 identical, 3 common prefix, 4 common suffix, 5 frequency list
        "ConsensusDescriptor: aggregation int32 1 descriptor | fields_map FieldsMap 2 descriptor",
        "FieldsMapEntry: key string 1 | value ConsensusDescriptor 2",
        "FieldsMap: *fields FieldsMapEntry 1",
        "SimpleConsensusInputs: value values.v1.Value 1 observation | error string 2 observation"
        " | descriptors ConsensusDescriptor 3 | default values.v1.Value 4",
        "ReportRequest: encoded_payload bytes 1 | encoder_name string 2 | signing_algo string 3 | hashing_algo string 4",
        "AttributedSignature: signature bytes 1 | signer_id uint32 2",
        "ReportResponse: config_digest bytes 1 | seq_nr uint64 2 | report_context bytes 3 | raw_report bytes 4"
        " | *sigs AttributedSignature 5",
    ],
    "capabilities.scheduler.cron.v1": [
        "Config: schedule string 1",
        "Payload: scheduled_execution_time google.protobuf.Timestamp 1",
    ],
    "capabilities.networking.http.v1alpha": [
        # key type: 1 = ECDSA_EVM
        "AuthorizedKey: type int32 1 | public_key string 2",
        "Config: *authorized_keys AuthorizedKey 1",
        "Payload: input bytes 1 | key AuthorizedKey 2",
        "HeaderEntry: key string 1 | value string 2",
        "HeaderValues: *values string 1",
        "MultiHeaderEntry: key string 1 | value HeaderValues 2",
        "CacheSettings: store bool 1 | max_age google.protobuf.Duration 2",
        "Request: url string 1 | method string 2 | *headers HeaderEntry 3 | body bytes 4"
        " | timeout google.protobuf.Duration 5 | cache_settings CacheSettings 6 | *multi_headers MultiHeaderEntry 7",
        "Response: status_code uint32 1 | *headers HeaderEntry 2 | body bytes 3 | *multi_headers MultiHeaderEntry 4",
    ],
    "capabilities.blockchain.evm.v1alpha": [
        "CallMsg: from bytes 1 | to bytes 2 | data bytes 3",
        "CallContractRequest: call CallMsg 1 | block_number values.v1.BigInt 2",
        "CallContractReply: data bytes 1",
        "BalanceAtRequest: account bytes 1 | block_number values.v1.BigInt 2",
        "BalanceAtReply: balance values.v1.BigInt 1",
        "HeaderByNumberRequest: block_number values.v1.BigInt 1",
        "Header: timestamp uint64 1 | block_number values.v1.BigInt 2 | hash bytes 3 | parent_hash bytes 4",
        "HeaderByNumberReply: header Header 1",
        "GasConfig: gas_limit uint64 1",
        "WriteReportRequest: receiver bytes 1 | report sdk.v1alpha.ReportResponse 2 | gas_config GasConfig 3",
        # tx_status: 0 fatal, 1 reverted, 2 success; receiver status: 0 success, 1 reverted
        "WriteReportReply: tx_status int32 1 | receiver_contract_execution_status int32 2 | tx_hash bytes 3"
        " | transaction_fee values.v1.BigInt 4 | error_message string 5",
        # confidence: 0 safe, 1 latest, 2 finalized
        "TopicValues: *values bytes 1",
        "FilterLogTriggerRequest: *addresses bytes 1 | *topics TopicValues 2 | confidence int32 3",
        "Log: address bytes 1 | *topics bytes 2 | tx_hash bytes 3 | block_hash bytes 4 | data bytes 5"
        " | event_sig bytes 6 | block_number values.v1.BigInt 7 | tx_index uint32 8 | index uint32 9 | removed bool 10",
        # FilterLogs: a block hash, or a block range (absent from = 0, absent to = latest, as go-ethereum);
        # topics by position, an empty position matching any topic
        "Topics: *topic bytes 1",
        "FilterQuery: block_hash bytes 1 | from_block values.v1.BigInt 2 | to_block values.v1.BigInt 3"
        " | *addresses bytes 4 | *topics Topics 5",
        "FilterLogsRequest: filter_query FilterQuery 1",
        "FilterLogsReply: *logs Log 1",
        "EstimateGasRequest: msg CallMsg 1",
        "EstimateGasReply: gas uint64 1",
        "GetTransactionByHashRequest: hash bytes 1",
        "Transaction: nonce uint64 1 | gas uint64 2 | to bytes 3 | data bytes 4 | hash bytes 5"
        " | value values.v1.BigInt 6 | gas_price values.v1.BigInt 7",
        "GetTransactionByHashReply: transaction Transaction 1",
        "GetTransactionReceiptRequest: hash bytes 1",
        # field 5 is not used on the wire
        "Receipt: status uint64 1 | gas_used uint64 2 | tx_index uint64 3 | block_hash bytes 4 | *logs Log 6"
        " | tx_hash bytes 7 | effective_gas_price values.v1.BigInt 8 | block_number values.v1.BigInt 9"
        " | contract_address bytes 10",
        "GetTransactionReceiptReply: receipt Receipt 1",
    ],
    # The SDK's internal test capabilities, which its standard conformance workflows call.
    "capabilities.internal.basictrigger.v1": [
        "Config: name string 1 | number int32 2",
        "Outputs: cool_output string 1",
    ],
    "capabilities.internal.basicaction.v1": [
        "Inputs: input_thing bool 1",
        "Outputs: adapted_thing string 1",
    ],
    "capabilities.internal.actionandtrigger.v1": [
        "Config: name string 1 | number int32 2",
        "TriggerEvent: cool_output string 1",
        "Input: name string 1",
        "Output: welcome string 1",
    ],
    "capabilities.internal.nodeaction.v1": [
        "NodeInputs: input_thing bool 1",
        "NodeOutputs: output_thing int32 1",
    ],
}

_WELL_KNOWN = {
    "google.protobuf.Any": "google/protobuf/any.proto",
    "google.protobuf.Empty": "google/protobuf/empty.proto",
    "google.protobuf.Timestamp": "google/protobuf/timestamp.proto",
    "google.protobuf.Duration": "google/protobuf/duration.proto",
}


def _file(package: str, lines: list[str]) -> descriptor_pb2.FileDescriptorProto:
    fdp = descriptor_pb2.FileDescriptorProto(name=f"node/cre/{package.replace('.', '/')}.proto",
                                             package=package, syntax="proto3")
    deps: set[str] = set()
    for line in lines:
        name, _, body = line.partition(":")
        message = fdp.message_type.add(name=name.strip())
        oneofs: dict[str, int] = {}
        for spec in body.split("|"):
            parts = spec.split()
            fname, ftype, number = parts[0], parts[1], int(parts[2])
            field = message.field.add(name=fname.lstrip("*"), number=number)
            field.label = (descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED if fname.startswith("*")
                           else descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
            if ftype in _SCALARS:
                field.type = _SCALARS[ftype]
            else:
                full = ftype if "." in ftype else f"{package}.{ftype}"
                field.type = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
                field.type_name = "." + full
                if full in _WELL_KNOWN:
                    deps.add(_WELL_KNOWN[full])
                elif not full.startswith(package + "."):
                    deps.add(f"node/cre/{full.rsplit('.', 1)[0].replace('.', '/')}.proto")
            if len(parts) > 3:
                oneof = parts[3]
                if oneof not in oneofs:
                    oneofs[oneof] = len(message.oneof_decl)
                    message.oneof_decl.add(name=oneof)
                field.oneof_index = oneofs[oneof]
    fdp.dependency.extend(sorted(deps))
    return fdp


def _build() -> tuple[descriptor_pool.DescriptorPool, dict[str, Any]]:
    pool = descriptor_pool.DescriptorPool()
    for module in (any_pb2, empty_pb2, timestamp_pb2, duration_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        pool.Add(proto)
    for package, lines in _SCHEMA.items():  # packages are listed after the ones they use
        pool.Add(_file(package, lines))
    classes: dict[str, Any] = {}
    for package, lines in _SCHEMA.items():
        for line in lines:
            full = f"{package}.{line.partition(':')[0].strip()}"
            classes[full] = message_factory.GetMessageClass(pool.FindMessageTypeByName(full))
    return pool, classes


_POOL, _CLASSES = _build()
# Our pool's own Any (messages of one pool only nest messages of that pool).
Any_ = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("google.protobuf.Any"))


def file_descriptor(package: str) -> bytes:
    """The serialized FileDescriptorProto of one of our packages (for test shims)."""
    proto = descriptor_pb2.FileDescriptorProto()
    _POOL.FindFileByName(f"node/cre/{package.replace('.', '/')}.proto").CopyToProto(proto)
    return proto.SerializeToString()


def message(full_name: str) -> Any:
    """The class of one of the messages above, by its full protobuf name."""
    return _CLASSES[full_name]


TYPE_PREFIX = "type.googleapis.com/"


def pack(msg: Any) -> Any:
    out = Any_()
    out.type_url = TYPE_PREFIX + msg.DESCRIPTOR.full_name
    out.value = msg.SerializeToString()
    return out


def unpack(any_msg: Any, cls: Any) -> Any:
    """`any_msg` as `cls`; ValueError when it holds another type (an empty type_url is accepted:
    the SDK may send a bare default message)."""
    name = any_msg.type_url.rpartition("/")[2]
    if name and name != cls.DESCRIPTOR.full_name:
        raise ValueError(f"expected {cls.DESCRIPTOR.full_name}, got {name}")
    return cls.FromString(any_msg.value)


Value = message("values.v1.Value")
BigInt = message("values.v1.BigInt")
ExecuteRequest = message("sdk.v1alpha.ExecuteRequest")
ExecutionResult = message("sdk.v1alpha.ExecutionResult")
CapabilityRequest = message("sdk.v1alpha.CapabilityRequest")
CapabilityResponse = message("sdk.v1alpha.CapabilityResponse")
AwaitCapabilitiesRequest = message("sdk.v1alpha.AwaitCapabilitiesRequest")
AwaitCapabilitiesResponse = message("sdk.v1alpha.AwaitCapabilitiesResponse")
GetSecretsRequest = message("sdk.v1alpha.GetSecretsRequest")
AwaitSecretsRequest = message("sdk.v1alpha.AwaitSecretsRequest")
AwaitSecretsResponse = message("sdk.v1alpha.AwaitSecretsResponse")
SecretResponses = message("sdk.v1alpha.SecretResponses")
SimpleConsensusInputs = message("sdk.v1alpha.SimpleConsensusInputs")
CronConfig = message("capabilities.scheduler.cron.v1.Config")
CronPayload = message("capabilities.scheduler.cron.v1.Payload")
HttpTriggerConfig = message("capabilities.networking.http.v1alpha.Config")
HttpTriggerPayload = message("capabilities.networking.http.v1alpha.Payload")
HttpRequest = message("capabilities.networking.http.v1alpha.Request")
HttpResponse = message("capabilities.networking.http.v1alpha.Response")


def bigint_to_int(value: Any) -> int:
    n = int.from_bytes(value.abs_val, "big")
    return -n if value.sign < 0 else n


def int_to_bigint(n: int) -> Any:
    out = BigInt()
    if n:
        out.abs_val = abs(n).to_bytes((abs(n).bit_length() + 7) // 8, "big")
        out.sign = -1 if n < 0 else 1
    return out


def value_to_python(value: Any) -> Any:
    """A values.v1.Value as JSON-friendly Python (bytes as 0x-hex, big numbers as strings)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "map_value":
        return {e.key: value_to_python(e.value) for e in value.map_value.fields}
    if kind == "list_value":
        return [value_to_python(v) for v in value.list_value.fields]
    if kind == "bytes_value":
        return "0x" + value.bytes_value.hex()
    if kind == "bigint_value":
        return str(bigint_to_int(value.bigint_value))
    if kind == "decimal_value":
        coefficient = bigint_to_int(value.decimal_value.coefficient)
        return f"{coefficient}e{value.decimal_value.exponent}"
    if kind == "time_value":
        return value.time_value.ToJsonString()
    if kind in ("int64_value", "uint64_value") and abs(getattr(value, kind)) > 2**53:
        return str(getattr(value, kind))
    return getattr(value, kind)
