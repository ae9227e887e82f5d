"""An OTLP/HTTP trace receiver for the span export test: it decodes each
request with OpenTelemetry's own generated protobuf classes
(opentelemetry-proto), answers as a collector does, and appends one JSON line
per span to the file it is given. A request it cannot decode is answered 400
and logged to stderr, so the test sees nothing arrive.

Usage: otlp_receiver.py OUT_FILE   (prints the port it listens on, then serves)
Listens only on 127.0.0.1.
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status


def value(any_value):
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def attributes(key_values):
    return {kv.key: value(kv.value) for kv in key_values}


def spans(request):
    for resource_spans in request.resource_spans:
        resource = attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield {
                    "service": resource.get("service.name"),
                    "scope": scope_spans.scope.name,
                    "trace_id": span.trace_id.hex(),
                    "span_id": span.span_id.hex(),
                    "parent_span_id": span.parent_span_id.hex(),
                    "name": span.name,
                    "kind": Span.SpanKind.Name(span.kind),
                    "start": span.start_time_unix_nano,
                    "end": span.end_time_unix_nano,
                    "flags": span.flags,
                    "status": Status.StatusCode.Name(span.status.code),
                    "attributes": attributes(span.attributes),
                }


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            if self.path != "/v1/traces":
                raise ValueError(f"path {self.path}")
            if self.headers.get("Content-Type") != "application/x-protobuf":
                raise ValueError(f"content type {self.headers.get('Content-Type')}")
            request = ExportTraceServiceRequest.FromString(body)
            lines = [json.dumps(span) + "\n" for span in spans(request)]
        except Exception as e:  # noqa: BLE001 (any failure is the answer)
            print(f"otlp_receiver: refused a request: {e}", file=sys.stderr, flush=True)
            self.send_response(400)
            self.end_headers()
            return
        with open(sys.argv[1], "a", encoding="utf-8") as out:
            out.writelines(lines)
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
