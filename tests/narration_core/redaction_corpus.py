"""Data for the redaction tests: secrets that must go, and everyday lines that must stay.

SECRETS rows are (kind, line, secret, kept): after redaction `secret` is gone and `kept`
(the words around it, with the marker) is still there. ORDINARY lines must come out
byte for byte as they went in. Fake credentials only: each is shaped like the real
format (prefix, alphabet, length) and is valid nowhere.
"""

from __future__ import annotations

# Shaped like the real formats (lengths from the vendors' docs and gitleaks' rules).
OPENAI = "sk-" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8S9t0UvWx"
OPENAI_PROJECT = "sk-proj-" + "Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0Fe_Dc-Ba9876543210abcdEFGH"
GITHUB_PAT = "ghp_" + "aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5"
GITHUB_OAUTH = "gho_" + "Zy8Xw7Vu6Ts5Rq4Po3Nm2Lk1Ji0Hg9Fe8Dc7Ba"
GITHUB_APP = "ghs_" + "0a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8s"
GITHUB_FINE = (
    "github_pat_"
    + "11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ab"
)
AWS_ID = "AKIA" + "IOSFODNN7EXAMPLE"
AWS_SESSION_ID = "ASIA" + "Y34FZKBOKMUTVV7A"
SLACK_BOT = "xoxb-" + "2048123456789-4096123456789-AbCdEfGhIjKlMnOpQrStUvWx"
SLACK_USER = "xoxp-" + "1234567890-1234567890-1234567890-0a1b2c3d4e5f60718293a4b5c6d7e8f9"
HUGGING_FACE = "hf_" + "QwErTyUiOpAsDfGhJkLzXcVbNmQwErTyUi"
PEM = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "-----END OPENSSH PRIVATE KEY-----"
)

SECRETS: list[tuple[str, str, str, str]] = [
    # Known token formats: redacted wherever they stand, even alone.
    ("openai", f"using {OPENAI} for chat", OPENAI[3:], "using [REDACTED] for chat"),
    ("openai-project", f"key is {OPENAI_PROJECT}.", OPENAI_PROJECT[8:], "key is [REDACTED]."),
    ("github-pat", f"pushing with {GITHUB_PAT} now", GITHUB_PAT[4:], "with [REDACTED] now"),
    ("github-oauth", f"oauth {GITHUB_OAUTH}", GITHUB_OAUTH[4:], "oauth [REDACTED]"),
    ("github-app", f"({GITHUB_APP})", GITHUB_APP[4:], "([REDACTED])"),
    ("github-fine-grained", f"pat={GITHUB_FINE}", GITHUB_FINE[11:], "pat=[REDACTED]"),
    ("aws-access-key-id", f"aws id {AWS_ID} ok", AWS_ID[4:], "aws id [REDACTED] ok"),
    ("aws-session-key-id", f"id: {AWS_SESSION_ID}", AWS_SESSION_ID[4:], "id: [REDACTED]"),
    ("slack-bot", f"slack {SLACK_BOT} posted", SLACK_BOT[5:], "slack [REDACTED] posted"),
    ("slack-user", f"{SLACK_USER}", SLACK_USER[5:], "[REDACTED]"),
    ("hugging-face", f"hub login {HUGGING_FACE}", HUGGING_FACE[3:], "hub login [REDACTED]"),
    # Env-style names: any *_TOKEN, *_KEY, *_SECRET, *_PASSWORD, *_PASS.
    ("env-token", "export HF_TOKEN=hf_abc123", "hf_abc123", "export HF_TOKEN=[REDACTED]"),
    ("env-api-key", "OPENAI_API_KEY=sk-x1 run", "sk-x1", "OPENAI_API_KEY=[REDACTED] run"),
    ("env-secret-key", "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG", "wJalr", "KEY=[REDACTED]"),
    ("env-secret", "CLIENT_SECRET='s3cr3t value'", "s3cr3t", "CLIENT_SECRET='[REDACTED]'"),
    ("env-password", "DB_PASSWORD=hunter2 psql", "hunter2", "DB_PASSWORD=[REDACTED] psql"),
    ("env-pass", "SMTP_PASS=letmein", "letmein", "SMTP_PASS=[REDACTED]"),
    ("env-coloured", "\x1b[31mpassword=hunter3\x1b[0m", "hunter3", "password=[REDACTED]"),
    ("env-glued", "PGPASSWORD=s3cret psql -h db", "s3cret", "PGPASSWORD=[REDACTED] psql"),
    ("env-yaml", "POSTGRES_PASSWORD: example", "example", "POSTGRES_PASSWORD: [REDACTED]"),
    ("escape-split", "\x1b[1mtoken:\x1b[0m 3f9a1c77e0b2", "3f9a1c77e0b2", "token: [REDACTED]"),
    ("escape-in-name", "tok\x1b[0men=abc123", "abc123", "token=[REDACTED]"),
    ("env-dotted", "spring.datasource.password=Tr0ub4dor", "Tr0ub4dor", "password=[REDACTED]"),
    # key=value, key: value and JSON shapes with a plausible secret value.
    ("kv-token", "token=abcdef", "abcdef", "token=[REDACTED]"),
    ("kv-after-label", "error: password=hunter2", "hunter2", "error: password=[REDACTED]"),
    ("kv-after-flag", "run --token --password=hunter2", "hunter2", "--password=[REDACTED]"),
    ("kv-password", "login password=hunter2 ok", "hunter2", "password=[REDACTED] ok"),
    ("kv-query", "GET /models?api_key=sk-live-42&x=1", "sk-live-42", "api_key=[REDACTED]&x=1"),
    ("kv-colon", "token: 3f9a1c77e0b2", "3f9a1c77e0b2", "token: [REDACTED]"),
    ("kv-ini", "password = hunter2", "hunter2", "password = [REDACTED]"),
    ("kv-private-key", "private_key: abc1", "abc1", "private_key: [REDACTED]"),
    ("kv-header", "X-Api-Key: 8f3e2a1b9c", "8f3e2a1b9c", "X-Api-Key: [REDACTED]"),
    ("kv-json", '{"secret": "s3cr3t", "n": 1}', "s3cr3t", '"secret": "[REDACTED]", "n": 1'),
    ("kv-json-word", '{"password": "hunter"}', "hunter", '"password": "[REDACTED]"'),
    ("kv-repr", "{'access_token': 'abc.def'}", "abc.def", "'access_token': '[REDACTED]'"),
    ("kv-sentence", "(token=abc123).", "abc123", "(token=[REDACTED])."),
    # Command-line flags.
    ("flag-space", "run --token s3cret --port 1", "s3cret", "--token [REDACTED] --port 1"),
    ("flag-equals", "run --api-key=k3y", "k3y", "--api-key=[REDACTED]"),
    ("flag-quoted", "run --db-password 'two words'", "two words", "--db-password '[REDACTED]'"),
    ("mysql", "mysql -u root -pHunter2 shop", "Hunter2", "-u root -p[REDACTED] shop"),
    ("mysql-quoted", "mysqldump -p'my secret' db", "my secret", "-p'[REDACTED]' db"),
    ("mariadb", "mariadb -h db -pS3cret!", "S3cret!", "mariadb -h db -p[REDACTED]"),
    ("curl-user", "curl -fsS -u alice:S3cret https://x/", "S3cret", "-u alice:[REDACTED] https"),
    ("curl-user-long", "+ curl --user 'bob:pa55' x", "pa55", "--user 'bob:[REDACTED]' x"),
    # Authorization headers.
    ("bearer", "calling with Bearer eyJhbGciOi.J9abc", "eyJhbGciOi.J9abc", "Bearer [REDACTED]"),
    ("bearer-word", "Authorization: Bearer tops3cret", "tops3cret", "Bearer [REDACTED]"),
    (
        "basic",
        "Authorization: Basic dXNlcjpwYXNz",
        "dXNlcjpwYXNz",
        "Authorization: Basic [REDACTED]",
    ),
    ("authorization-bare", "authorization=tok123", "tok123", "authorization=[REDACTED]"),
    (
        "github-header",
        "Authorization: token 0123abcd",
        "0123abcd",
        "Authorization: token [REDACTED]",
    ),
    ("cookie", "Cookie: session=abc; id=2", "session=abc", "Cookie: [REDACTED]"),
    ("set-cookie", "Set-Cookie: sid=9f8e7d; Path=/", "9f8e7d", "Set-Cookie: [REDACTED]"),
    # URL credentials.
    (
        "url-password",
        "fetch https://alice:pa55w0rd@hub.example/m.gguf",
        "pa55w0rd",
        "https://alice:[REDACTED]@hub.example/m.gguf",
    ),
    ("url-slash", "https://user:pa/ss@h.example/x", "pa/ss", "https://user:[REDACTED]@h.example/x"),
    (
        "url-token-user",
        "https://ghp_0123456789abcdefXYZ@github.com/o/r",
        "ghp_0123",
        "https://[REDACTED]@github.com/o/r",
    ),
    ("url-db", "postgres://app:Sup3r@db:5432/app", "Sup3r", "postgres://app:[REDACTED]@db:5432"),
    # Private keys in one event's text.
    ("pem", f"key file:\n{PEM}\nend", "b3BlbnNzaC1rZXktdjEAAAAA", "[REDACTED PRIVATE KEY]\nend"),
    (
        "pgp",
        "-----BEGIN PGP PRIVATE KEY BLOCK-----\nlQOYBF\n-----END PGP PRIVATE KEY BLOCK-----",
        "lQOYBF",
        "[REDACTED PRIVATE KEY]",
    ),
    (
        "pem-cut",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEow truncated",
        "MIIEow",
        "[REDACTED PRIVATE KEY]",
    ),
]

# The project's own messages that mention a token, a password or a key.
PROJECT_MESSAGES: list[str] = [
    "binding the queen to 0.0.0.0 exposes it beyond this machine and needs a token; "
    "pass --token or set RBEE_TOKEN",
    "pass --token <T> or set RBEE_TOKEN",
    "refusing to listen on 0.0.0.0 without a token; pass --token or set RBEE_TOKEN, "
    "or bind 127.0.0.1",
    "the queen at http://127.0.0.1:7833 requires a token; set RBEE_TOKEN",
    "the queen requires a bearer token; send `Authorization: Bearer <token>` "
    "(keeper: set RBEE_TOKEN)",
    "Bearer token the queen requires (env RBEE_TOKEN).",
    "Address to bind; anything but loopback needs a token.",
    "queen-rbee: the job server. `queen-rbee --port 7833 --bind 127.0.0.1 [--token T]`.",
    "bearer token required (env RBEE_TOKEN)",
    "Run a prompt on a worker and stream the tokens.",
    "Tokens to generate at most.",
    "keeper: RBEE_TOKEN is empty; set it to the queen's token or unset it",
    "[REDACTED]",
    "password=[REDACTED]",
    "[REDACTED PRIVATE KEY]",
]

ORDINARY: list[str] = [
    # Shell and coreutils.
    "cat: '/etc/passwd': Permission denied",
    "'/etc/passwd': Permission denied",
    "ls: cannot open directory '/root/.secrets': Permission denied",
    "cp: cannot stat '/etc/ssl/private/server.key': No such file or directory",
    "bash: /usr/local/bin/keygen: Permission denied",
    "PWD=/home/alice/src/rbee",
    "sort by monkey=banana",
    "keyboard",
    # ssh, sudo, gpg.
    "alice@example.org: Permission denied (publickey,password).",
    "Permission denied (publickey).",
    "Enter passphrase for key '/home/alice/.ssh/id_ed25519': ",
    "[sudo] password for root: ",
    "Password: ",
    "Password: ********",
    "Host key verification failed.",
    "ED25519 key fingerprint is SHA256:Gx2nZ3aXv8Y1Qm0rK9bLwJ4tP7sC6dE5fH8iU2oA3yE.",
    "Identity added: /home/alice/.ssh/id_ed25519 (alice@laptop)",
    'gpg: key 7FAC5991: public key "Google Inc." imported',
    "sudo: a password is required",
    "su: Authentication failure",
    # Token and password words as status.
    "Token expired",
    "token: expired",
    "token: invalid",
    "password: required",
    "password=required",
    "api_key: missing",
    "Error: invalid token: expired",
    "token=<token>",
    "password: incorrect",
    "session token has expired; log in again",
    "the password you entered is wrong",
    "key: value",
    # git.
    "remote: Support for password authentication was removed on August 13, 2021.",
    "fatal: Authentication failed for 'https://github.com/rbee/rbee-py.git/'",
    "git clone https://git@example.org/r",
    "To github.com:rbee/rbee-py.git\n   664b01b..a21cc54  main -> main",
    "hint: Updates were rejected because the tip of your current branch is behind",
    # pip and apt.
    "Successfully installed tokenizers-0.15.2 keyring-24.3.0",
    "Looking in indexes: https://pypi.org/simple, https://__token__:****@gitlab.example/api/v4",
    "Requirement already satisfied: cryptography>=2.0 in ./.venv/lib/python3.11/site-packages",
    "W: GPG error: http://ppa.example jammy InRelease: NO_PUBKEY 871920D1991BC93C",
    "W: Key is stored in legacy trusted.gpg keyring (/etc/apt/trusted.gpg)",
    "E: Could not open lock file /var/lib/dpkg/lock-frontend - open (13: Permission denied)",
    "Get:1 http://deb.debian.org/debian bookworm InRelease [151 kB]",
    # Compilers, type checkers, tracebacks.
    "error: expected ';' before 'token'",
    "error[E0425]: cannot find value `key` in this scope",
    "KeyError: 'token'",
    "TypeError: __init__() missing 1 required positional argument: 'password'",
    "    token = self._next_token()",
    '    password = getpass.getpass("Password: ")',
    "    key = cache[name]",
    "    def login(self, token: str, password: Optional[str] = None) -> None:",
    "    client = JobClient(url, token=settings.token, timeout=5.0)",
    "    config = ServerConfig(ACTOR, token=args.token)",
    '"""The bearer token: `flag` (--token) > RBEE_TOKEN > none. Empty means none.',
    'jobs/auth.py:24: error: Argument 1 has incompatible type "int"; expected "str"',
    "gcc: error: unrecognized command-line option '--password'",
    "cc -pthread -pedantic -o keygen keygen.c",
    # Model runners and this project's domain.
    "Loaded 42 tokens in 3 ms",
    "max_tokens=64 tokens_out=12",
    "llm_load_print_meta: EOS token        = 2 '</s>'",
    "eos_token=</s> bos_token=<s> pad_token=[PAD]",
    "see https://example.org/x",
    "keeper run --max-tokens 64",
    "risk-assessment-framework-v2-final-report-2026",
    "Loaded llama-3-8b.Q4_K_M.gguf on NVIDIA RTX 4090",
    "mkdir -p /tmp/rbee && mysql --version",
    "curl -u alice https://example.org/ -o out.json",
    "+ curl -fsSL https://sh.rustup.rs -o rustup.sh",
]
