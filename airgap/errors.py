"""The one exception tree of airgap. Every error says what went wrong and what to do.

    AirgapError                 (hint: what the user should do)
    ├── InvalidReference        a malformed image reference
    ├── InvalidInput            a malformed option, size, file or platform
    │   └── InUse               another airgap run holds the bundle directory or import journal
    ├── DigestMismatch          content does not match its digest or size
    ├── UnsupportedManifest     schema1 or an unknown manifest type
    └── RegistryError           an HTTP exchange with a registry failed (method, redacted URL, status, codes)
        ├── AuthError           401: missing or wrong credentials
        ├── PermissionDenied    403 (or 401 insufficient_scope): the credentials lack rights
        ├── NotFound            404: unknown repository, manifest or blob
        ├── TLSError            certificate verification failed
        └── ConnectionFailed    refused, reset or timed out after every retry
"""

from __future__ import annotations


class AirgapError(Exception):
    """Base of every error airgap raises on purpose. ``hint`` tells the user what to do."""

    exit_code = 1
    default_hint = ""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}: {self.hint}"
        return self.message


class InvalidReference(AirgapError):
    exit_code = 2
    default_hint = "write it as [host[:port]/]path[:tag][@sha256:<64 hex>]"


class InvalidInput(AirgapError):
    exit_code = 2


class InUse(InvalidInput):
    default_hint = "wait for that run to end (or stop it), then run this command again"


class DigestMismatch(AirgapError):
    exit_code = 3
    default_hint = "the content was corrupted or altered in transit and was not used; run the command again"


class UnsupportedManifest(AirgapError):
    exit_code = 4


class RegistryError(AirgapError):
    """An exchange with a registry failed. Carries the method, the redacted URL, status and error codes."""

    exit_code = 5

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        registry: str = "",
        repository: str = "",
        method: str = "",
        url: str = "",
        status: int | None = None,
        codes: tuple[str, ...] = (),
        retryable: bool = False,
    ) -> None:
        super().__init__(message, hint=hint)
        self.registry = registry
        self.repository = repository
        self.method = method
        self.url = url
        self.status = status
        self.codes = codes
        self.retryable = retryable


class AuthError(RegistryError):
    default_hint = "check the user name and password, or run `airgap login REGISTRY`"


class PermissionDenied(RegistryError):
    default_hint = "the credentials are valid but lack the rights; ask the registry's admin for pull/push access"


class NotFound(RegistryError):
    default_hint = "check the repository name, tag or digest"


class TLSError(RegistryError):
    default_hint = (
        "pass the registry's CA with --ca-cert FILE, or --insecure-registry HOST[:PORT] to skip verification"
    )


class ConnectionFailed(RegistryError):
    default_hint = "check that the registry is up and reachable, then run the command again"
