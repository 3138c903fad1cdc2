"""bert4keras' `snippets.WebServing` on the standard library (`http.server`, one thread per request).

    arguments = {'text': (None, True), 'n': (int, False)}
    web = WebServing(port=8864)
    web.route('/gen_synonyms', gen_synonyms, arguments)
    web.start()  # GET http://127.0.0.1:8864/gen_synonyms?text=...

As bert4keras': each argument is read from the query string (GET) or the url-encoded form body (POST), as text
(the last value if repeated), converted by its function when one is given; a missing required one answers
`{"code": 1, "desc": "lack of \"<name>\" argument"}`, an exception in the function `{"code": 2, "desc": str(e)}`,
success `{"code": 0, "desc": "succeeded", "data": func(**kwargs)}` (JSON, non-ASCII kept). `server` names bottle's
server adapters and is accepted but unused. Differs: responses are `application/json; charset=utf-8`; an unknown
path answers 404, a known path with another method 405, a value its conversion refuses 400 (`code` 1, naming it;
bottle answered a 500 page).
"""
from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

# the arguments a route declares: name -> (conversion function or None, required)
Arguments = dict[str, tuple[Callable[[str], object] | None, bool]]


class InvalidArgument(ValueError):
    """A parameter its conversion function refused (answered 400)."""


def _answer(arguments: Arguments, func: Callable, values: dict[str, list[str]]) -> dict:
    """bert4keras' JSON answer for one request with the given parameter values."""
    outputs = {"code": 0, "desc": "succeeded", "data": {}}
    kwargs = {}
    for key, (convert, required) in arguments.items():
        if key not in values:
            if required:
                return {**outputs, "code": 1, "desc": f'lack of "{key}" argument'}
            continue
        value = values[key][-1]
        try:
            kwargs[key] = convert(value) if convert is not None else value
        except (TypeError, ValueError) as e:
            raise InvalidArgument(f'invalid "{key}" argument {value!r}: {e}') from None
    try:
        outputs["data"] = func(**kwargs)
    except Exception as e:  # noqa: BLE001 - bert4keras reports any failure of the served function as code 2
        outputs.update(code=2, desc=str(e))
    return outputs


class WebServing:
    """A small JSON web interface over Python functions (bert4keras' `WebServing`)."""

    def __init__(self, host: str = "0.0.0.0", port: int = 8000, server: str = "paste"):
        self.host, self.port, self.server = host, port, server
        self.routes: dict[str, tuple[str, Arguments, Callable[[dict[str, list[str]]], dict]]] = {}
        self.httpd: ThreadingHTTPServer | None = None

    def wraps(self, func: Callable, arguments: Arguments, method: str = "GET") -> Callable[[dict], dict]:
        """`func` as a function of the request's parameter values (name → list of texts) giving the JSON answer."""
        method = method.upper()
        if method not in ("GET", "POST"):
            raise ValueError(f"WebServing: method must be 'GET' or 'POST', got {method!r}")
        for key, spec in arguments.items():
            if not isinstance(spec, (tuple, list)) or len(spec) != 2:
                raise ValueError(f"WebServing: arguments[{key!r}] must be (conversion function or None, required), "
                                 f"got {spec!r}")
        return lambda values: _answer(arguments, func, values)

    def route(self, path: str, func: Callable, arguments: Arguments, method: str = "GET") -> None:
        """Serve `func` at `path` (GET reads the query string, POST the url-encoded form body)."""
        self.routes[path] = (method.upper(), dict(arguments), self.wraps(func, arguments, method))

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        routes = self.routes

        class Handler(BaseHTTPRequestHandler):
            def _respond(self, method: str) -> None:
                url = urlsplit(self.path)
                if url.path not in routes:
                    return self._send(404, {"code": 404, "desc": f"no route {url.path}", "data": {}})
                route_method, _, answer = routes[url.path]
                if method != route_method:
                    return self._send(405, {"code": 405, "desc": f"{url.path} accepts {route_method}", "data": {}})
                if method == "GET":
                    text = url.query
                else:
                    length = int(self.headers.get("Content-Length") or 0)
                    text = self.rfile.read(length).decode("utf-8")
                try:
                    self._send(200, answer(parse_qs(text, keep_blank_values=True)))
                except InvalidArgument as e:
                    self._send(400, {"code": 1, "desc": str(e), "data": {}})

            def _send(self, status: int, body: dict) -> None:
                data = json.dumps(body, ensure_ascii=False).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._respond("GET")

            def do_POST(self):
                self._respond("POST")

            def log_message(self, format, *args):
                pass

        return Handler

    def bind(self) -> ThreadingHTTPServer:
        """Open the listening socket (port 0 picks a free one: see `self.port` after)."""
        self.httpd = ThreadingHTTPServer((self.host, self.port), self._handler())
        self.port = self.httpd.server_address[1]
        return self.httpd

    def start(self) -> None:
        """Serve until interrupted (or `stop()` from another thread)."""
        httpd = self.httpd or self.bind()
        try:
            httpd.serve_forever()
        finally:
            httpd.server_close()
            self.httpd = None

    def start_in_thread(self) -> threading.Thread:
        """Serve in a daemon thread; returns it once the socket listens."""
        httpd = self.httpd or self.bind()
        thread = threading.Thread(target=httpd.serve_forever, name="WebServing", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None


__all__ = ["InvalidArgument", "WebServing"]
