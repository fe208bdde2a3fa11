"""A Kubernetes API server that answers TokenReview, for Vault's `kubernetes` auth method.

Vault (OpenBao) checks a service account token by POSTing a TokenReview to
`<kubernetes_host>/apis/authentication.k8s.io/v1/tokenreviews` over TLS (verified against the
`kubernetes_ca_cert` it is configured with: `ca_pem` here, from a CA made at start), with the
token itself as the bearer when no reviewer token is configured. This server answers as the API
server does: `status.authenticated`, `status.user.username`
(`system:serviceaccount:<namespace>:<name>`), `status.user.uid`, and `status.audiences`, the
token's audiences that the review asked for. A token none of whose audiences were asked for is
not authenticated (with the API server's error), and a bearer that is no live token gets a 401
`Status`, as from the real server.

Tokens come from `issue(namespace, service_account, audience)`: JWTs shaped like the kubelet's
projected tokens (RS256 header; `aud`, `exp`, `iss`, `sub` and the `kubernetes.io` claims naming
the namespace, pod and service account) with a random signature: without `pem_keys` Vault does
not verify signatures, it asks TokenReview, which is what this stands in for. `revoke(token)`
makes the reviews refuse a token (its pod or service account was deleted).

Usage::

    with FakeKubernetesApi() as api:
        vault.write("auth/kubernetes/config", kubernetes_host=api.url,
                    kubernetes_ca_cert=api.ca_pem, disable_local_ca_jwt=True)
        token = api.issue("orchestrator", "codegen-orchestrator-analyst", audience="vault")
        api.reviews          # every TokenReview spec received, in order
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import secrets
import ssl
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REVIEW_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"
ISSUER = "https://kubernetes.default.svc.cluster.local"


@dataclass(frozen=True)
class ServiceAccountToken:
    namespace: str
    service_account: str
    uid: str
    audiences: tuple[str, ...]


def _segment(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name | None = None,
    signer: ec.EllipticCurvePrivateKey | None = None,
) -> x509.Certificate:
    """A CA certificate (no issuer) or a server certificate for 127.0.0.1 signed by the CA."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(signer or key, hashes.SHA256())


class FakeKubernetesApi:
    def __init__(self) -> None:
        self._tokens: dict[str, ServiceAccountToken] = {}
        self._uids: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()
        #: The `spec` of every TokenReview received (token included), in arrival order.
        self.reviews: list[dict[str, Any]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""
        #: The PEM of the CA that signed the server's certificate (Vault's kubernetes_ca_cert).
        self.ca_pem = ""

    def issue(self, namespace: str, service_account: str, *, audience: str) -> str:
        """A live projected token of `service_account` in `namespace` for `audience`."""
        with self._lock:
            uid = self._uids.setdefault((namespace, service_account), str(uuid.uuid4()))
        now = int(time.time())
        claims = {
            "aud": [audience],
            "exp": now + 3600,
            "iat": now,
            "nbf": now,
            "iss": ISSUER,
            "sub": f"system:serviceaccount:{namespace}:{service_account}",
            "kubernetes.io": {
                "namespace": namespace,
                "pod": {"name": f"{service_account}-0", "uid": str(uuid.uuid4())},
                "serviceaccount": {"name": service_account, "uid": uid},
            },
        }
        header = {"alg": "RS256", "kid": "fake", "typ": "JWT"}
        signature = base64.urlsafe_b64encode(secrets.token_bytes(256)).rstrip(b"=").decode()
        token = f"{_segment(header)}.{_segment(claims)}.{signature}"
        with self._lock:
            self._tokens[token] = ServiceAccountToken(namespace, service_account, uid, (audience,))
        return token

    def revoke(self, token: str) -> None:
        with self._lock:
            self._tokens.pop(token, None)

    def review(self, bearer: str, spec: dict[str, Any]) -> tuple[HTTPStatus, dict[str, Any]]:
        """The API server's answer to one TokenReview request."""
        with self._lock:
            self.reviews.append(spec)
            caller = self._tokens.get(bearer)
            reviewed = self._tokens.get(spec.get("token", ""))
        if caller is None:
            return HTTPStatus.UNAUTHORIZED, {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": "Unauthorized",
                "reason": "Unauthorized",
                "code": 401,
            }
        wanted = spec.get("audiences") or [ISSUER]
        status: dict[str, Any] = {"user": {}}
        if reviewed is None:
            status.update(authenticated=False, error="invalid bearer token")
        elif not (audiences := [a for a in reviewed.audiences if a in wanted]):
            status.update(
                authenticated=False,
                error=f"token audiences {list(reviewed.audiences)} is invalid for the target "
                f"audiences {wanted}",
            )
        else:
            namespace = reviewed.namespace
            status = {
                "authenticated": True,
                "user": {
                    "username": f"system:serviceaccount:{namespace}:{reviewed.service_account}",
                    "uid": reviewed.uid,
                    "groups": [
                        "system:serviceaccounts",
                        f"system:serviceaccounts:{namespace}",
                        "system:authenticated",
                    ],
                },
                "audiences": audiences,
            }
        return HTTPStatus.CREATED, {
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "spec": spec,
            "status": status,
        }

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> str:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path != REVIEW_PATH:
                    self._answer(HTTPStatus.NOT_FOUND, {"kind": "Status", "code": 404})
                    return
                bearer = self.headers.get("Authorization", "").removeprefix("Bearer ")
                review = json.loads(body or b"{}")
                self._answer(*api.review(bearer, review.get("spec") or {}))

            def _answer(self, status: HTTPStatus, document: dict[str, Any]) -> None:
                payload = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.socket = self._tls().wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fake-kubernetes-api", daemon=True
        )
        self._thread.start()
        self.url = f"https://127.0.0.1:{self._server.server_address[1]}"
        return self.url

    def _tls(self) -> ssl.SSLContext:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _certificate("fake-kubernetes-ca", ca_key)
        key = ec.generate_private_key(ec.SECP256R1())
        server = _certificate("kube-apiserver", key, issuer=ca.subject, signer=ca_key)
        self.ca_pem = ca.public_bytes(serialization.Encoding.PEM).decode()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory() as directory:
            chain, private = Path(directory) / "server.pem", Path(directory) / "server.key"
            chain.write_bytes(server.public_bytes(serialization.Encoding.PEM))
            private.write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            context.load_cert_chain(chain, private)
        return context

    def stop(self) -> None:
        server, thread, self._server, self._thread = self._server, self._thread, None, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(10)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
