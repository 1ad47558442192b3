"""`mar-builder deploy nginx`: an nginx.conf for Debian's nginx in front of TorchServe's inference API only.

Every number comes from the TorchServe settings (config.properties), so the front and the server cannot drift:
the upstream is `inference_address`, the body limit is `max_request_size` and the upstream read timeout follows
`default_response_timeout`. Why a front at all (TorchServe 0.12's frontend is archived, with a 2020 Netty):
docs/security.md.
"""

import ipaddress
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List
from urllib.parse import urlsplit

from ..errors import SettingsError

logger = logging.getLogger("mar_builder")

# TorchServe's own defaults, used when the settings leave them out (ConfigManager in the frontend).
TORCHSERVE_MAX_REQUEST_SIZE = 6553500  # bytes
TORCHSERVE_RESPONSE_TIMEOUT_S = 120
# Netty's HttpRequestDecoder (TorchServe keeps its defaults): a 4096-byte request line, 8192 bytes of headers.
# nginx refuses first, with the same numbers: each line within one 4 KB buffer, at most two of them.
HEADER_BUFFER = "4k"
HEADER_BUFFERS = 2
# Seconds nginx waits for a client: the request headers, each read of the body, each write of the answer.
CLIENT_HEADER_TIMEOUT_S = 10
CLIENT_BODY_TIMEOUT_S = 30
SEND_TIMEOUT_S = 30
# TorchServe gives up on a worker after the model's responseTimeout (default_response_timeout when the model
# sets none); nginx waits a little longer, so that TorchServe's own answer comes first.
UPSTREAM_TIMEOUT_MARGIN_S = 10
# TorchServe's model names (torch-model-archiver's check): a letter or digit, then letters, digits, '_', '-', '.'.
MODEL_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
CONF_FILE = "nginx.conf"
PID_FILE = "nginx.pid"  # nginx writes it once every listening socket is bound


@dataclass(frozen=True)
class FrontSettings:
    listen_host: str  # the address nginx listens on (0.0.0.0 to expose it)
    listen_port: int  # its port
    upstream: str  # TorchServe's inference API, scheme://host:port (from inference_address)
    max_body_bytes: int  # client_max_body_size: TorchServe's max_request_size
    upstream_timeout_s: int  # proxy_read_timeout: default_response_timeout plus a margin
    tls_cert: Path | None = None  # a PEM certificate (chain): nginx then speaks HTTPS only
    tls_key: Path | None = None  # its private key
    user: str = ""  # nginx's `user` for its workers when started as root ("": nginx's built-in default, nobody)

    def __post_init__(self) -> None:
        if not 1 <= self.listen_port <= 65535:
            raise SettingsError(f"--listen port must be 1 to 65535, got {self.listen_port}")
        if self.max_body_bytes < 1:
            raise SettingsError(f"max_request_size must be a positive number of bytes, got {self.max_body_bytes}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise SettingsError("--tls-cert and --tls-key go together: give both or neither")
        for path in (self.tls_cert, self.tls_key):
            if path is not None and not Path(path).is_file():
                raise SettingsError(f"no file at {path}")
        if self.user and not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", self.user):
            raise SettingsError(f"--user must be a user name, got {self.user!r}")


def parse_listen(text: str) -> tuple:
    """`HOST:PORT`, `[V6]:PORT` or `PORT` (loopback) as (host, port); SettingsError otherwise."""
    match = re.fullmatch(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]]+)):(?P<port>\d+)|(?P<only>\d+)", text)
    if not match:
        raise SettingsError(f"--listen takes HOST:PORT (0.0.0.0:8000), [::]:PORT or PORT, got {text!r}")
    if match["only"]:
        return "127.0.0.1", int(match["only"])
    return match["v6"] or match["host"], int(match["port"])


def front_settings(properties: Dict[str, str], listen: str, **options) -> FrontSettings:
    """The front for the TorchServe that `properties` (config.properties) describe; `options` are
    FrontSettings' optional fields. SettingsError when a setting cannot be read."""
    address = urlsplit(properties.get("inference_address", "http://127.0.0.1:8080"))
    if address.scheme not in ("http", "https") or not address.hostname or address.port is None:
        raise SettingsError(f"inference_address must be http(s)://HOST:PORT, got {address.geturl()!r}")
    host = address.hostname
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"
    if not _is_loopback(host):
        logger.warning(
            "inference_address %s is not on loopback: clients can reach TorchServe around the front; "
            "bind it to 127.0.0.1 (docs/security.md)",
            address.geturl(),
        )
    upstream_host = f"[{host}]" if ":" in host else host
    listen_host, listen_port = parse_listen(listen)
    try:
        max_body = int(properties.get("max_request_size", TORCHSERVE_MAX_REQUEST_SIZE))
        timeout = int(properties.get("default_response_timeout", TORCHSERVE_RESPONSE_TIMEOUT_S))
    except ValueError as e:
        raise SettingsError(f"max_request_size and default_response_timeout must be whole numbers: {e}") from None
    return FrontSettings(
        listen_host=listen_host,
        listen_port=listen_port,
        upstream=f"{address.scheme}://{upstream_host}:{address.port}",
        max_body_bytes=max_body,
        upstream_timeout_s=timeout + UPSTREAM_TIMEOUT_MARGIN_S,
        **options,
    )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _json_error(status: int, error_type: str, message: str) -> str:
    """A `return` of the handler's error shape, {"code", "type", "message"}, as nginx's own answer."""
    body = f'{{"code": {status}, "type": "{error_type}", "message": "{message}"}}'
    return f"default_type application/json; return {status} '{body}';"


def _proxied(methods: str, scheme: str) -> str:
    """A location body: other methods get 405; the rest go to TorchServe under the path nginx matched
    (decoded, with `.` and `..` resolved), never the raw one, so TorchServe routes what nginx allowed."""
    return (
        f"if ($request_method !~ ^({methods})$) {{ return 405; }}\n"
        f"            proxy_pass {scheme}://torchserve$uri$is_args$args;"
    )


def nginx_conf(settings: FrontSettings) -> str:
    """The nginx.conf text: paths are relative to nginx's prefix (`nginx -p DIR`), so nothing goes to /var."""
    listen_host = f"[{settings.listen_host}]" if ":" in settings.listen_host else settings.listen_host
    tls = settings.tls_cert is not None
    upstream = urlsplit(settings.upstream)
    user = f"user {settings.user};\n" if settings.user else ""
    tls_lines = (
        f"        ssl_certificate {Path(settings.tls_cert).resolve()};\n"
        f"        ssl_certificate_key {Path(settings.tls_key).resolve()};\n"
        "        ssl_protocols TLSv1.2 TLSv1.3;\n"
        "        ssl_session_cache shared:tls:1m;\n"
        if tls
        else ""
    )
    v = f"(/versions/{MODEL_NAME})?"  # TorchServe's optional /versions/<version> of the v2 routes
    too_large = f"the body is over {settings.max_body_bytes} bytes (max_request_size)"
    headers_too_large = f"a header line is over {HEADER_BUFFER}B, or all over {HEADER_BUFFERS} x {HEADER_BUFFER}B"
    return f"""\
# Written by `mar-builder deploy nginx` from TorchServe's settings: do not edit, write it again.
# Run: nginx -p <this folder> -c {CONF_FILE} -e logs/error.log   (foreground; `-s quit` with the same -p/-c stops it)
# Only TorchServe's inference API is proxied; management and metrics are not (docs/security.md).
{user}daemon off;
worker_processes 1;
pid {PID_FILE};
error_log logs/error.log error;  # not warn: every body over 128 KB would log its temporary file
events {{ worker_connections 1024; }}

http {{
    access_log logs/access.log;
    client_body_temp_path tmp/client_body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;
    server_tokens off;

    # Bodies: at most TorchServe's max_request_size ({settings.max_body_bytes} bytes), read whole before
    # TorchServe sees a byte (a slow client holds nginx, not the frontend); beyond 128 KB into tmp/.
    client_max_body_size {settings.max_body_bytes};
    client_body_buffer_size 128k;
    proxy_request_buffering on;
    # Headers: request line and each header line at most {HEADER_BUFFER}, all of them at most
    # {HEADER_BUFFERS} x {HEADER_BUFFER} (Netty's limits in TorchServe's frontend: 4096 and 8192 bytes).
    # Over them: 431 (JSON) for headers, nginx's own 414 for the request line.
    client_header_buffer_size 1k;
    large_client_header_buffers {HEADER_BUFFERS} {HEADER_BUFFER};
    client_header_timeout {CLIENT_HEADER_TIMEOUT_S}s;
    client_body_timeout {CLIENT_BODY_TIMEOUT_S}s;
    send_timeout {SEND_TIMEOUT_S}s;
    keepalive_timeout 65s;

    # TorchServe 0.12 takes only "Bearer" as written; RFC 9110 makes the scheme case-insensitive.
    map $http_authorization $torchserve_authorization {{
        "~*^[ \\t]*bearer[ \\t]+(?<bearer_token>[^ \\t]+)[ \\t]*$" "Bearer $bearer_token";
        default $http_authorization;
    }}

    upstream torchserve {{
        server {upstream.netloc};
        keepalive 16;
    }}

    server {{
        listen {listen_host}:{settings.listen_port}{" ssl" if tls else ""};
{tls_lines}
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Authorization $torchserve_authorization;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_connect_timeout 5s;
        proxy_send_timeout {CLIENT_BODY_TIMEOUT_S}s;
        # TorchServe's default_response_timeout plus {UPSTREAM_TIMEOUT_MARGIN_S} s: its own answer comes first.
        proxy_read_timeout {settings.upstream_timeout_s}s;
        proxy_intercept_errors off;

        error_page 400 @bad_request;
        error_page 413 @body_too_large;
        error_page 494 =431 @headers_too_large;
        error_page 501 @not_implemented;
        error_page 502 =503 @torchserve_unavailable;
        error_page 504 @torchserve_timeout;
        error_page 404 @not_found;
        error_page 405 @method_not_allowed;

        location = /ping {{
        {_proxied("GET|HEAD", upstream.scheme)}
        }}
        location ~ "^/(predictions|explanations)/{MODEL_NAME}(/{MODEL_NAME})?$" {{
        {_proxied("POST|PUT", upstream.scheme)}
        }}
        location ~ "^/v1/models/{MODEL_NAME}:(predict|explain)$" {{
        {_proxied("POST", upstream.scheme)}
        }}
        location ~ "^/v2/models/{MODEL_NAME}{v}/(infer|explain)$" {{
        {_proxied("POST", upstream.scheme)}
        }}
        location ~ "^/v2(/health/(live|ready)|/models/{MODEL_NAME}{v}(/ready)?)?$" {{
        {_proxied("GET|HEAD", upstream.scheme)}
        }}
        location / {{ return 404; }}

        location @body_too_large {{
            {_json_error(413, "RequestTooLarge", too_large)}
        }}
        location @headers_too_large {{
            {_json_error(431, "RequestHeaderFieldsTooLarge", headers_too_large)}
        }}
        location @bad_request {{
            {_json_error(400, "BadRequest", "nginx could not parse the request")}
        }}
        location @not_implemented {{
            {_json_error(501, "NotImplemented", "a Transfer-Encoding other than chunked")}
        }}
        location @torchserve_unavailable {{
            {_json_error(503, "ServiceUnavailable", "TorchServe is not reachable")}
        }}
        location @torchserve_timeout {{
            {_json_error(504, "GatewayTimeout", f"TorchServe did not answer within {settings.upstream_timeout_s} s")}
        }}
        location @not_found {{
            {_json_error(404, "NotFound", "not an inference route: /predictions, /explanations, /v1, /v2, /ping")}
        }}
        location @method_not_allowed {{
            {_json_error(405, "MethodNotAllowed", "this route takes other methods")}
        }}
    }}
}}
"""


def write_front(out: Path, settings: FrontSettings) -> List[Path]:
    """Write out/nginx.conf and make out/logs and out/tmp (nginx's prefix); returns the files written."""
    out = Path(out)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    (out / "tmp").mkdir(exist_ok=True)
    conf = out / CONF_FILE
    conf.write_text(nginx_conf(settings))
    return [conf]


def run_deploy_nginx(args) -> List[Path]:
    """`deploy nginx`: the front for the TorchServe that --config describes, written into --out."""
    from ..server.local_server import read_properties

    if not args.listen:
        raise SettingsError("deploy nginx needs --listen HOST:PORT: where clients reach the front (0.0.0.0:8000)")
    if not Path(args.config).is_file():
        raise SettingsError(f"no TorchServe settings at {args.config} (--config)")
    settings = front_settings(
        read_properties(Path(args.config)), args.listen, tls_cert=args.tls_cert, tls_key=args.tls_key, user=args.user
    )
    written = write_front(args.out, settings)
    logger.info("wrote %s: %s -> TorchServe %s", written[0], args.listen, settings.upstream)
    logger.info("start it with: nginx -p %s/ -c %s -e logs/error.log", Path(args.out).resolve(), CONF_FILE)
    return written
