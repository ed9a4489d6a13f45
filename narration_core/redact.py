"""Secret redaction, applied to every event before any sink sees it.

Upstream rbee had this and removed it; a narration line ends up in terminals, CI logs
and job logs on disk, so a token that reaches `human` leaks three ways at once.

Redaction targets secret *values*, never words: a known token format (`ghp_…`,
`sk-…`, `AKIA…`) goes wherever it stands, but after a secret-looking name
(`password=`, `token:`, `--api-key`, `Bearer`) only a value that could be a secret
goes. `'/etc/passwd': Permission denied`, `token: expired` and `pass --token <T>`
describe secrets without holding one, and pass through unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from typing import Any

from narration_core.sanitize import strip_control

REDACTED = "[REDACTED]"
REDACTED_KEY = "[REDACTED PRIVATE KEY]"

# A cheap check decides whether the patterns need to run at all: nearly every message
# holds none of these. Substring tests are ~10x faster than one regex alternation
# (measured: 0.45 µs against 4.8 µs), so the token-format prefixes are only looked for
# when the character they all contain is present.
# Looked for in the lowered text; the later groups only when their "_", "-" or " -" is
# there.
_WORD_TRIGGERS = (
    "key", "token", "pass", "pwd", "secret", "bearer", "auth", "://", "cookie", "credential",
)  # fmt: skip
_UNDERSCORE_TRIGGERS = ("hf_", "gh", "github_pat", "sk_", "rk_", "npm_")
_DASH_TRIGGERS = ("sk-", "xox", "glpat-")
_COMMAND_TRIGGERS = ("mysql", "mariadb", "curl")  # `mysql -pX`, `curl -u user:X`
_ENGLISH_FREQUENCY = "etaoinshrdlcumwfgypbvkjxqz"  # most common first; others rank rarest

# Values that name a state or stand in for a secret rather than being one.
_NOT_SECRETS = frozenset((
    "expired", "denied", "required", "missing", "invalid", "incorrect", "wrong", "none", "null",
    "nil", "empty", "unset", "set", "not", "no", "yes", "true", "false", "ok", "error", "failed",
    "failure", "unknown", "redacted", "hidden", "masked", "changed", "updated", "accepted",
    "rejected", "refused", "revoked", "valid", "needed", "present", "provided", "given", "ignored",
    "disabled", "enabled", "saved", "stored", "found", "absent", "default", "token", "password",
    "secret", "key", "value", "or", "and", "is", "was", "for", "the", "a", "an", "to", "of", "in",
    "on", "from", "with", "if", "see", "use", "must", "may", "should", "will", "here", "your",
    "my", "our", "this", "that",
))  # fmt: skip
# Prefixes that make a `*_key` / `*_token` name ordinary: database keys, model vocab.
_PLAIN_NAME_PREFIXES = frozenset((
    "sort", "primary", "foreign", "partition", "public", "pub", "cache", "lookup", "hash", "row",
    "group", "dict", "map", "index", "unique", "composite", "natural", "surrogate", "idempotency",
    "routing", "shard", "bos", "eos", "pad", "unk", "sep", "cls", "mask", "max", "min", "num", "n",
    "start", "end", "stop", "special", "first", "last", "next", "prev", "total", "vocab",
))  # fmt: skip
_PLACEHOLDER_START = "<[{$%("  # `<token>`, `[REDACTED]`, `{token}`, `$TOKEN`, `%s`
_PLACEHOLDER = re.compile(r"[*xX.…_?#-]+|(?i:redacted|\*+redacted\*+)")
_TRAILING = ".,;:)]}>!?`"  # sentence punctuation after an unquoted value stays
_PLAIN_WORD = re.compile(r"[A-Za-z][a-z]*(?:['-][a-z]+)*|[A-Z]+")
_SHORT_NUMBER = re.compile(r"\d{1,5}")
# Source code, as tracebacks quote it: `f(x)`, `cache[k]`; in prose also `settings.token`.
_CALL = re.compile(r"[A-Za-z_][\w.]*[(\[].*")
_DOTTED = re.compile(r"[a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)+")
_LONGEST_WORD = 20  # letters; a longer run of letters alone is more likely a key than a word


def _is_secret(value: str, *, strict: bool, quoted: bool = False) -> bool:
    """Whether `value`, found after a secret-looking name, could be the secret itself.

    Placeholders, status words, paths, the next `--flag` and (unless `quoted`) source
    code never are. `strict` (a `:` or spaced separator, as in prose and source) also
    lets plain words and small numbers pass.
    """
    value = value.strip("`")  # `flag` in prose names a thing
    if not value or value[0] in _PLACEHOLDER_START or _PLACEHOLDER.fullmatch(value):
        return False
    if value.lower() in _NOT_SECRETS or value.startswith(("/", "./", "../", "~/", "--")):
        return False
    if not quoted and (_CALL.fullmatch(value) or _is_attribute(value)):
        return False
    if not strict:
        return True
    if _SHORT_NUMBER.fullmatch(value) or _DOTTED.fullmatch(value):
        return False
    return len(value) > _LONGEST_WORD or not _PLAIN_WORD.fullmatch(value)


def _is_attribute(value: str) -> bool:
    """`args.token`, `settings.queen_token`: code reading a secret, not the secret."""
    return _DOTTED.fullmatch(value) is not None and bool(
        _SECRET_NAME.fullmatch(value.rpartition(".")[2])
    )


def _is_plain_name(name: str) -> bool:
    """`sort_key`, `eos_token`, bare `key`: names that hold no secret, or rarely do."""
    parts = re.split(r"[_.-]", name.lower().strip("\"'"))
    if len(parts) == 1:
        return parts[0] == "key"
    return parts[-2] in _PLAIN_NAME_PREFIXES


def _redact_value(match: re.Match[str], *, strict: bool, strict_quoted: bool = False) -> str:
    """`match` with its value group replaced by the marker if the value could be a secret.

    A quoted value is a value for sure, so only placeholders and status words are kept
    (unless `strict_quoted`); an unquoted one loses trailing sentence punctuation first.
    """
    groups = match.groupdict()
    for group in ("quoted", "quoted2", "value"):
        value = groups.get(group)
        if value is not None:
            break
    else:
        return match.group(0)
    quoted = group != "value"
    if not quoted:
        value = value.rstrip(_TRAILING)
    elif not strict_quoted:
        strict = False
    if not _is_secret(value, strict=strict, quoted=quoted):
        return match.group(0)
    start = match.start(group) - match.start(0)
    whole = match.group(0)
    return whole[:start] + REDACTED + whole[start + len(value) :]


def _kv_replace(match: re.Match[str]) -> str:
    # `token=x` is a value, and so is `HF_TOKEN: x`; `token: x` and `token = x` may be
    # prose or source code.
    name = match.group("name")
    plain = _is_plain_name(name)
    env_style = "_" in name and name.isupper()
    strict = plain or (match.group("sep") != "=" and not env_style)
    return _redact_value(match, strict=strict, strict_quoted=plain)


def _flag_replace(match: re.Match[str]) -> str:
    # `--token=x` is a value; `--token or set RBEE_TOKEN` is advice.
    return _redact_value(match, strict=match.group("sep") != "=")


def _auth_replace(match: re.Match[str]) -> str:
    # After a scheme (`Basic …`) comes the credential; bare, it may be a state ("failed").
    return _redact_value(match, strict=match.group("scheme") is None)


def _word_replace(match: re.Match[str]) -> str:
    return _redact_value(match, strict=True)


def _value_replace(match: re.Match[str]) -> str:
    return _redact_value(match, strict=False)


# A value: "quoted", 'quoted' or a bare run up to a space, quote, separator or control.
_VALUE = r"""(?:"(?P<quoted>[^"\n]*)"|'(?P<quoted2>[^'\n]*)'|(?P<value>[^\s"'&,;\x00-\x1f]+))"""
# A secret-looking name: `token`, `api_key`, env-style `HF_TOKEN`, `AWS_SECRET_ACCESS_KEY`,
# `spring.datasource.password`, header-style `X-Api-Key`. `*_pass` needs a prefix (a
# bare `pass=3` is a test count); `PGPASSWORD` and `authtoken` glue theirs on (but
# `monkey` is no key).
_SECRET_NAME = re.compile(
    r"(?:[a-z0-9]+[_.-])*"
    r"(?:[a-z0-9]*(?:token|password|passwd|secret)|api[_-]?key|apikey|access[_-]?key|key|pwd"
    r"|credentials?|authorization|cookie)|(?:[a-z0-9]+[_.-])+pass",
    re.IGNORECASE,
)
# Any name and a separator; the name is checked in Python (faster than a pattern of
# names tried at every word) before its value is read. Not after `/`: `/etc/passwd:`
# is a path. Possessive runs, so a long word is read once.
_KEY_SEP = re.compile(
    r"(?<![A-Za-z0-9_./\\-])(?P<name>[A-Za-z0-9_.-]++)[\"']?+(?P<sep>[ \t]*+[:=][ \t]*+)"
)
_KEY_VALUE = re.compile(_KEY_SEP.pattern + _VALUE)

# Formats with a fixed prefix and alphabet (after gitleaks' rules): redacted anywhere.
_TOKEN_FORMATS = (
    r"(?<![A-Za-z0-9_-])(?:"
    r"sk-(?:proj-|svcacct-|admin-|ant-)?[A-Za-z0-9_-]{20,}"  # OpenAI, Anthropic
    r"|gh[pousr]_[A-Za-z0-9]{20,}"  # GitHub tokens
    r"|github_pat_[A-Za-z0-9_]{22,}"  # GitHub fine-grained tokens
    r"|(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])"  # AWS access key ids
    r"|xox[baprse]-[A-Za-z0-9-]{10,}"  # Slack
    r"|hf_[A-Za-z0-9]{20,}"  # Hugging Face
    r"|[sr]k_(?:live|test)_[A-Za-z0-9]{16,}"  # Stripe
    r"|glpat-[A-Za-z0-9_-]{20,}"  # GitLab
    r"|npm_[A-Za-z0-9]{36}"  # npm
    r"|AIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])"  # Google API keys (gcp-api-key)
    r"|eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.(?:[A-Za-z0-9_-]{10,}={0,2})?"  # jwt
    r")"
)


def _sub_values(
    pattern: re.Pattern[str], replace: Callable[[re.Match[str]], str], text: str
) -> str:
    """`pattern.sub(replace, text)`, except that a match left unchanged consumes nothing.

    In `--token --password=x`, `--token` and its "value" match first; `re.sub` would
    resume after that value and never see `--password=x`.
    """
    out: list[str] = []
    done = pos = 0
    while (match := pattern.search(text, pos)) is not None:
        replaced = replace(match)
        if replaced == match.group(0):
            pos = match.start() + 1
            continue
        out += (text[done : match.start()], replaced)
        done = pos = match.end()
    if not out:
        return text
    out.append(text[done:])
    return "".join(out)


def _sub_key_values(text: str) -> str:
    """Redact `name=value` / `name: value` shapes whose name looks secret.

    Names and separators are found first and only a secret-looking name's value is
    read, so a long value after an ordinary name (`error: …`) costs nothing.
    """
    out: list[str] = []
    done = pos = 0
    while (found := _KEY_SEP.search(text, pos)) is not None:
        pos = found.end()
        if not _SECRET_NAME.fullmatch(found.group("name")):
            continue
        match = _KEY_VALUE.match(text, found.start())
        if match is None:
            continue
        replaced = _kv_replace(match)
        if replaced != match.group(0):
            out += (text[done : match.start()], replaced)
            done = pos = match.end()
    if not out:
        return text
    out.append(text[done:])
    return "".join(out)


class _Pass:
    """One redaction pass, its pattern compiled on first use: most texts open no gate,
    and a keeper command that redacts nothing should not compile them all (~2-3 ms)."""

    __slots__ = ("_apply", "_flags", "_pattern", "_replace")

    def __init__(
        self, pattern: str, replace: str | Callable[[re.Match[str]], str], flags: int = 0
    ) -> None:
        self._pattern, self._replace, self._flags = pattern, replace, flags
        self._apply: Callable[[str], str] | None = None

    def __call__(self, text: str) -> str:
        apply = self._apply
        if apply is None:
            compiled = re.compile(self._pattern, self._flags)
            replace = self._replace
            if isinstance(replace, str):  # a fixed replacement: re.sub
                apply = partial(compiled.sub, replace)
            else:  # a function that may keep a match: see _sub_values
                apply = partial(_sub_values, compiled, replace)
            self._apply = apply
        return apply(text)


def _values(pattern: str, replace: Callable[[re.Match[str]], str]) -> Callable[[str], str]:
    return _Pass(pattern, replace)


def _fixed(pattern: str, replacement: str, flags: int = 0) -> Callable[[str], str]:
    return _Pass(pattern, replacement, flags)


_FORMAT_GATES = (*_UNDERSCORE_TRIGGERS, "sk-", "xox", "glpat-", "akia", "asia", "aiza", "eyj")

# Names a URL's query gives its secrets: `?key=` (Google), `&sig=` (Azure SAS),
# `X-Amz-Signature=`, `?access_token=`. Any value but a placeholder goes; in a query a bare
# `key` is an API key, but `sort_key` or `eos_token` is still no secret.
_QUERY_SECRET = re.compile(
    r"(?i)[?&](?P<name>(?:[a-z0-9]+[_.-])*"
    r"(?:key|apikey|token|sig|signature|password|passwd|pwd|secret|credential))"
    r"=(?P<value>[^\s&#\"'<>`]+)"
)


def _query_replace(match: re.Match[str]) -> str:
    name = match.group("name")
    if name.lower() != "key" and _is_plain_name(name):
        return match.group(0)
    return _redact_value(match, strict=False)


# (gates, pass): a pass runs only if one of its gates, a substring of the lowered text,
# is there. In order: whole blocks and known formats first, so later passes see the
# marker.
_PASSES: tuple[tuple[tuple[str, ...], Callable[[str], str]], ...] = (
    (
        ("private key",),
        _fixed(
            r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY((?: BLOCK)?)-----.*?"
            r"(?:-----END \1PRIVATE KEY\2-----|\Z)",
            REDACTED_KEY,
            re.DOTALL,
        ),
    ),
    (_FORMAT_GATES, _fixed(_TOKEN_FORMATS, REDACTED)),
    (
        ("authoriz",),
        _values(
            r"(?i)\b(?:proxy-)?authorization[ \t]*[:=][ \t]*"
            r"(?P<scheme>(?:bearer|basic|token|digest|negotiate)[ \t]+)?"
            r"(?P<value>[^\s,;\"'\x00-\x1f]+)",
            _auth_replace,
        ),
    ),
    (("cookie",), _fixed(r"(?i)\b((?:set-)?cookie[ \t]*:[ \t]*)[^\s=;]+=.*", r"\g<1>" + REDACTED)),
    (("bearer",), _values(r"(?i)\bbearer[ \t]+(?P<value>[A-Za-z0-9._~+/=-]+)", _word_replace)),
    # Command-line flags: `--token X`, `--api-key=X`, `--db-password 'X'`.
    (
        ("--",),
        _values(
            r"(?i)(?<![\w-])--(?:[a-z0-9]+-)*"
            r"(?:api-?key|access-key|key|token|password|passwd|pass|secret)"
            r"(?P<sep>=|[ \t]+)" + _VALUE,
            _flag_replace,
        ),
    ),
    # The MySQL clients take the password glued to -p: `mysql -u root -pX`, `-p'X'`.
    (
        ("mysql", "mariadb"),
        _values(
            r"(?i:\b(?:mysql|mysqldump|mysqladmin|mysqlimport|mysqlshow|mysqlcheck|mariadb"
            r"|mariadb-dump))\b[^\n|;&]*?\s-p"
            r"(?:'(?P<quoted>[^'\n]*)'|\"(?P<quoted2>[^\"\n]*)\"|(?P<value>[^\s'\"\x00-\x1f]+))",
            _value_replace,
        ),
    ),
    # curl's user:password: `curl -u alice:X`, `--user 'alice:X'`.
    (
        ("curl",),
        _values(
            r"(?i:\bcurl)\b[^\n|;&]*?\s(?:-u|--user)(?:[ \t]+|=)['\"]?[^\s:'\"]*:"
            r"(?P<value>[^\s'\"\x00-\x1f]+)",
            _value_replace,
        ),
    ),
    # name=value, name: value, "name": "value", in any case and env-var style.
    (("=", ":"), _sub_key_values),
    # URL credentials: user:password@ (the password may hold '/'), or a bare token@;
    # bounded, so a long line of URLs is not read to its end from every scheme.
    (
        ("@",),
        _values(
            r"(?i)\b[a-z][a-z0-9+.-]*://[^\s:/@]{0,256}:(?P<value>[^\s@]{1,256})@"
            r"|\bhttps?://(?P<quoted>[^\s:/@]{16,256})@",
            _value_replace,
        ),
    ),
    # A URL's secret query parameters: `?key=…`, `&token=…`, `&sig=…`, `?api_key=…`.
    (("?", "&"), partial(_sub_values, _QUERY_SECRET, _query_replace)),
)


# Each word with its two letters rarest in English: a word can only be in the text when
# both are, and a one-character test is a memchr (~30x cheaper than a word search).
def _rarity(char: str) -> int:
    return _ENGLISH_FREQUENCY.find(char) % (len(_ENGLISH_FREQUENCY) + 1)  # not a letter: rarest


_GATED_WORD_TRIGGERS = tuple(
    (word, *sorted(set(word), key=_rarity)[-2:]) for word in _WORD_TRIGGERS
)
GATE_FROM = 2048  # characters: shorter texts are searched directly (gates cost more)
_DIGITS_ALIKE = bytes.maketrans(b"123456789", b"000000000")


def _may_hold_secret(text: str) -> bool:
    lowered = text.lower()
    if len(lowered) < GATE_FROM:
        for word in _WORD_TRIGGERS:
            if word in lowered:
                return True
    else:  # a batch of lines (the capture's fast path)
        for word, rare, rarest in _GATED_WORD_TRIGGERS:
            if rarest in lowered and rare in lowered and word in lowered:
                return True
    if "_" in text:
        for prefix in _UNDERSCORE_TRIGGERS:
            if prefix in lowered:
                return True
    if "-" in text:
        for prefix in _DASH_TRIGGERS:
            if prefix in lowered:
                return True
        if " -" in text:
            for command in _COMMAND_TRIGGERS:
                if command in lowered:
                    return True
    if "IA" in text and ("AKIA" in text or "ASIA" in text):  # AWS access key ids
        return True
    # Google API keys, JWTs; a one-character test first is a memchr, far cheaper.
    if ("z" in text and "AIza" in text) or ("J" in text and "eyJ" in text):
        return True
    if text.isprintable():
        return False
    # An escape sequence can split a word (`tok ESC[0m en=x`) that a terminal shows whole.
    return ("\x1b" in text or "\x9b" in text) and _may_hold_secret(strip_control(text))


def needs_redaction(text: str) -> bool:
    """False only when `redact` would surely return `text` (and any part of it) unchanged.

    The cheap trigger check on its own, for callers that skip redaction for a whole
    batch of lines at once (the capture's fast path); it may say True for clean text.
    A long text is checked through its distinct lines with digits made alike: no trigger
    holds a digit or spans lines, and log lines mostly differ in their numbers, so a
    batch of a thousand lines is often a few (measured: 4-8x less work on such output,
    ~1.7x more on a batch of all-different prose lines).
    """
    if len(text) >= GATE_FROM and "\x1b" not in text and "\x9b" not in text:
        data = text.encode("utf-8", "surrogatepass").translate(_DIGITS_ALIKE)
        text = b"\n".join(set(data.split(b"\n"))).decode("utf-8", "surrogatepass")
    return _may_hold_secret(text)


def _redact(text: str) -> str:
    lowered = text.lower()
    for gates, apply in _PASSES:
        for gate in gates:
            if gate in lowered:
                text = apply(text)
                break
    return text


def redact(text: str) -> str:
    """Replace credentials in free text with `[REDACTED]`, keeping the surrounding words.

    Escape sequences can hide a secret from the patterns (`ESC[31mpassword=x`); when
    removing them reveals one, the result is the redacted text without them.
    """
    if not _may_hold_secret(text):
        return text
    out = _redact(text)
    if "\x1b" in out or "\x9b" in out:
        plain = strip_control(out)
        if _redact(plain) != plain:
            return _redact(strip_control(text))
    return out


def redact_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """Redact structured fields: whole values under secret-looking keys, patterns elsewhere."""
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if value is not None and _is_secret_name(key):
            out[key] = REDACTED
        elif isinstance(value, str):
            out[key] = redact(value)
        else:
            out[key] = value
    return out


def _is_secret_name(key: str) -> bool:
    """`password`, `api_key`, `HF_TOKEN`: yes. `max_tokens`, `tokens_out`, `sort_key`: no."""
    return _SECRET_NAME.fullmatch(key) is not None and not _is_plain_name(key)
