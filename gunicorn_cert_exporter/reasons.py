"""Why a source could not be read, reached or proven: the ``reason`` label of every error series (closed sets)."""

from __future__ import annotations

from enum import Enum


class FileReason(str, Enum):
    """Why a certificate file could not be read or understood (the ``reason`` label)."""

    NOT_FOUND = "not_found"
    PERMISSION_DENIED = "permission_denied"
    NOT_REGULAR_FILE = "not_regular_file"
    TOO_LARGE = "too_large"
    EMPTY = "empty"
    SYMLINK_LOOP = "symlink_loop"
    PARSE_ERROR = "parse_error"
    NO_CERTIFICATE = "no_certificate"
    PASSWORD_REQUIRED = "password_required"  # noqa: S105  (a reason name, not a password)
    BAD_PASSWORD = "bad_password"  # noqa: S105  (a reason name, not a password)
    PASSWORD_UNAVAILABLE = "password_unavailable"  # noqa: S105  (a reason name, not a password)
    UNSUPPORTED = "unsupported"  # well-formed, but this cryptography build can't read it
    READ_ERROR = "read_error"
    SCAN_DEADLINE = "scan_deadline"  # the scan ran out of time before reaching this file


class PatternReason(str, Enum):
    """Why a configured path, glob or directory may not have matched everything it names."""

    NO_MATCH = "no_match"
    MAX_FILES = "max_files"  # scan.max_files reached: the first matches are kept
    MAX_DEPTH = "max_depth"  # a directory deeper than scan.max_depth was not entered
    PERMISSION_DENIED = "permission_denied"  # a directory under the pattern could not be listed
    READ_ERROR = "read_error"  # a directory under the pattern could not be listed for another reason
    SCAN_DEADLINE = "scan_deadline"  # the walk ran out of time


class EndpointReason(str, Enum):
    """Why no TLS handshake completed with an address (the ``reason`` label)."""

    DNS_FAILURE = "dns_failure"
    REFUSED = "refused"
    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"
    STALLED = "stalled"
    RESET = "reset"
    PLAINTEXT = "plaintext"
    HANDSHAKE_FAILURE = "handshake_failure"
    STARTTLS_FAILED = "starttls_failed"
    CLIENT_CERT_UNAVAILABLE = "client_cert_unavailable"
    CA_FILE_UNAVAILABLE = "ca_file_unavailable"
    ERROR = "error"
    SCAN_FAILED = "scan_failed"  # not probed this scan: its target's scan raised (a bug), or the probe process ended
    SCAN_DEADLINE = "scan_deadline"  # not probed by the scan's deadline: still being probed, its last result kept


class VerifyReason(str, Enum):
    """Why a served chain did not verify (chain and hostname)."""

    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    SELF_SIGNED = "self_signed"
    UNKNOWN_CA = "unknown_ca"
    HOSTNAME_MISMATCH = "hostname_mismatch"
    INCOMPLETE_CHAIN = "incomplete_chain"
    REVOKED = "revoked"
    INVALID = "invalid"


class MasterReason(str, Enum):
    """Why the configured Gunicorn master is not (provably) alive."""

    PIDFILE_MISSING = "pidfile_missing"
    PIDFILE_INVALID = "pidfile_invalid"
    NO_PROCESS = "no_process"
    NOT_GUNICORN = "not_gunicorn"
    NOT_MASTER = "not_master"
    NOT_LISTENING = "not_listening"
    PID_MISMATCH = "pid_mismatch"
    CONTROL_SOCKET_INVALID = "control_socket_invalid"
    CONTROL_SOCKET_UNAVAILABLE = "control_socket_unavailable"
    CONTROL_SOCKET_TIMEOUT = "control_socket_timeout"
    CONTROL_SOCKET_ERROR = "control_socket_error"
    CONTROL_SOCKET_UNTRUSTED = "control_socket_untrusted"
    PERMISSION_DENIED = "permission_denied"
    UNSUPPORTED_PLATFORM = "unsupported_platform"
    SCAN_FAILED = "scan_failed"  # the target's scan raised (a bug): not looked at this scan
    SCAN_DEADLINE = "scan_deadline"  # its look (endpoint, control socket, /proc) outlived the scan's deadline
