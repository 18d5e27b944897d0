"""A real IMAP server for the tests: Debian's Dovecot, run as a subprocess with its own
configuration in a temporary folder, a certificate from a CA made here (so tidings' default
certificate verification is exercised, and `?cafile=` is how it trusts this private CA), one
passwd-file user, a free port on loopback. `.ci/deps` installs it (dovecot-imapd)."""

from __future__ import annotations

import datetime as dt
import grp
import ipaddress
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from imapclient import IMAPClient

from tidings.sending.devsmtp import free_port

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
USER, PASSWORD = "bounces", "imap-test-password"

CONFIG = """\
base_dir = {dir}/run
state_dir = {dir}/state
log_path = {dir}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <{dir}/server.pem
ssl_key = <{dir}/server.key
auth_mechanisms = plain
default_internal_user = {internal_user}
default_internal_group = {internal_group}
default_login_user = {login_user}
first_valid_uid = 1
mail_location = maildir:{dir}/home/%u/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {dir}/passwd
}}
userdb {{
  driver = static
  args = uid={mail_user} gid={mail_group} home={dir}/home/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = {port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
service stats {{
  inet_listener http {{
    port = 0
  }}
}}
"""


def _users() -> dict[str, str]:
    """Dovecot's processes as root: its own unprivileged users (the package makes them);
    otherwise everything runs as the user running the tests."""
    if os.getuid() == 0:
        return {
            "internal_user": "dovecot",
            "internal_group": "dovecot",
            "login_user": "dovenull",
            "mail_user": "dovecot",
            "mail_group": "dovecot",
        }
    user = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    return {
        "internal_user": user,
        "internal_group": group,
        "login_user": user,
        "mail_user": user,
        "mail_group": group,
    }


def make_certificates(folder: Path) -> Path:
    """A CA and a certificate it signs for 127.0.0.1 and localhost. Returns the CA file."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tidings test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    (folder / "server.pem").write_bytes(server.public_bytes(serialization.Encoding.PEM))
    key_file = folder / "server.key"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    ca_file = folder / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return ca_file


class Dovecot:
    """`with Dovecot() as imap:` a running server; `imap.url` for tidings, `imap.client()`
    to put messages in and look at folders."""

    def __init__(self) -> None:
        # Not under pytest's tmp_path: Dovecot's unprivileged users must reach the folder.
        self.dir = Path(tempfile.mkdtemp(prefix="tidings-dovecot-"))
        self.dir.chmod(0o755)
        self.port = free_port()
        self.ca_file = make_certificates(self.dir)
        users = _users()
        (self.dir / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
        home = self.dir / "home"
        home.mkdir()
        if os.getuid() == 0:
            os.chown(home, pwd.getpwnam(users["mail_user"]).pw_uid, -1)
        self.config = self.dir / "dovecot.conf"
        self.config.write_text(CONFIG.format(dir=self.dir, port=self.port, **users))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"imaps://{USER}:{PASSWORD}@127.0.0.1:{self.port}/INBOX?cafile={self.ca_file}"

    def start(self) -> Dovecot:
        self.process = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(self.config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dovecot exited: {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"dovecot did not listen on {self.port}: {self.log()}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self) -> str:
        path = self.dir / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def client(self) -> Any:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        client = IMAPClient("127.0.0.1", self.port, ssl=True, ssl_context=context, timeout=10)
        client.login(USER, PASSWORD)
        return client

    def append(self, *messages: bytes, folder: str = "INBOX") -> None:
        client = self.client()
        try:
            for raw in messages:
                client.append(folder, raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
        finally:
            client.logout()

    def folder(self, name: str = "INBOX") -> dict[int, tuple[tuple[bytes, ...], bytes]]:
        """uid -> (flags, raw bytes) of every message in a folder (read without marking)."""
        client = self.client()
        try:
            if not client.folder_exists(name):
                return {}
            client.select_folder(name, readonly=True)
            uids = client.search()
            data = client.fetch(uids, ["FLAGS", "BODY.PEEK[]"]) if uids else {}
            return {uid: (tuple(d[b"FLAGS"]), d[b"BODY[]"]) for uid, d in data.items()}
        finally:
            client.logout()

    def __enter__(self) -> Dovecot:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
