"""What a URL may carry that must never be stored or shown: the user:password@ of its address and the
signature of a signed URL (S3, GCS and Azure presigned URLs, tokens and keys in its query).

`redacted` is the one place they are taken out. Every param, tag, run description, artifact text and
console line that may hold a URL a user gave (data source, tracking or registry URI, artifact
destination, endpoint), or an error that quotes one, goes through it. Light: no heavy import.
"""

from __future__ import annotations

import re
import urllib.parse

HIDDEN = "REDACTED"
# A URL inside any text: a scheme (at most 32 characters: a long word costs no time), "://", and what
# follows up to a blank, a quote, a bracket or the next URL; trailing punctuation ("...mnist.npz: download
# failed") is not part of it.
SCHEME = r"[A-Za-z][A-Za-z0-9+.-]{0,31}://"
URL = re.compile(rf"{SCHEME}(?:(?!{SCHEME})[^\s'\"<>`])*")
TRAILING = ".,;:!?)]}"
# name=value after the address: in the query or fragment, or after a separator (an unencoded URL inside
# another's query ends up split there); its value runs to the next & or #.
PARAMETER = re.compile(r"(?<=[?&#;])(?P<name>[^=&#?;/]*)=[^&#]*")
# Query and fragment parameters that authorise a request: AWS (X-Amz-Signature, X-Amz-Credential,
# X-Amz-Security-Token; Signature and AWSAccessKeyId of SigV2), GCS (X-Goog-Signature, X-Goog-Credential,
# GoogleAccessId), Azure SAS (sig), and the usual names of tokens, keys and passwords.
SECRET_PARAMETER = re.compile(r"^sig$|signature|credential|token|secret|passw|pwd|key|auth|accessid",
                              re.IGNORECASE)


def redacted(text: str) -> str:
    """`text` with every URL in it fit to store or print: the user:password@ of its address removed, the
    values of its secret query and fragment parameters replaced by REDACTED; everything else as it was."""
    return URL.sub(_in_text, text)


def error_text(err: BaseException) -> str:
    """An error as a run records it and a person reads it: its type and message, redacted."""
    return redacted(f"{type(err).__name__}: {err}")


def _in_text(match: re.Match) -> str:
    url = match.group().rstrip(TRAILING)
    return _without_secrets(url) + match.group()[len(url):]


def _without_secrets(url: str) -> str:
    scheme, _, rest = url.partition("://")
    authority = re.match(r"[^/?#]*", rest).group()
    return f"{scheme}://{authority.rpartition('@')[2]}" + PARAMETER.sub(_parameter, rest[len(authority):])


def _parameter(match: re.Match) -> str:
    name = match.group("name")
    return f"{name}={HIDDEN}" if SECRET_PARAMETER.search(urllib.parse.unquote_plus(name)) else match.group()
