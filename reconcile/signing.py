"""Signed approvals: an SSH signature over ``approval.json``'s exact bytes.

The format is OpenSSH's ``SSHSIG`` (``ssh-keygen -Y sign``), the one git uses
for signed commits, made and checked by the ``ssh-keygen`` binary itself: it is
the reference implementation, it reads every key type an approver may hold
(ed25519, RSA, ECDSA, FIDO security keys, keys in ``ssh-agent`` given by their
``.pub`` file) and asks for a passphrase on the terminal, none of which reconcile
should reimplement. Who may approve is an ``allowed_signers`` file (the format
``ssh-keygen`` documents under ALLOWED SIGNERS, the one git's
``gpg.ssh.allowedSignersFile`` uses), named in ``reconcile.toml``::

    [approval]
    allowed_signers = "allowed_signers"
    require_signature = true

A signature says which key approved; anyone who can write the plan folder can
still write an unsigned approval, so ``require_signature`` is what makes apply
refuse one.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from reconcile.errors import ConfigError, IntegrityError

NAMESPACE = "reconcile-approval"
_TIMEOUT = 120   # seconds: a passphrase prompt or a security-key touch


def _ssh_keygen() -> str:
    found = shutil.which("ssh-keygen")
    if found is None:
        raise ConfigError("signed approvals need OpenSSH's ssh-keygen, which is not on PATH "
                          "(Debian/Ubuntu: apt-get install openssh-client)")
    return found


def _run(args: list[str], data: bytes) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run([_ssh_keygen(), *args], input=data, capture_output=True,
                              timeout=_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise ConfigError(f"ssh-keygen {' '.join(args[:2])} did not finish in {_TIMEOUT} s") from None


def _last_line(stderr: bytes) -> str:
    lines = [line for line in stderr.decode("utf-8", "replace").splitlines()
             if line.strip() and not line.startswith("Signing data on standard input")]
    return lines[-1].strip() if lines else "no message"


def sign(data: bytes, key: Path) -> bytes:
    """An armoured SSH signature of ``data`` made with the private ``key`` (or its .pub, via ssh-agent)."""
    key = Path(key)
    if not key.is_file():
        raise ConfigError(f"{key}: signing key not found (give the approver's SSH key, e.g. ~/.ssh/id_ed25519)")
    done = _run(["-Y", "sign", "-f", str(key), "-n", NAMESPACE], data)
    if done.returncode != 0 or not done.stdout.startswith(b"-----BEGIN SSH SIGNATURE-----"):
        raise ConfigError(f"{key}: ssh-keygen could not sign ({_last_line(done.stderr)})")
    return done.stdout


def verify(data: bytes, signature: Path, allowed_signers: Path) -> str:
    """The principal (from ``allowed_signers``) whose key signed ``data``; ``IntegrityError``
    when the signature is bad or made by a key the file does not allow."""
    if not Path(allowed_signers).is_file():
        raise ConfigError(f"{allowed_signers}: allowed-signers file not found ([approval] allowed_signers)")
    found = _run(["-Y", "find-principals", "-s", str(signature), "-f", str(allowed_signers)], b"")
    principals = found.stdout.decode("utf-8", "replace").split() if found.returncode == 0 else []
    if not principals:
        raise IntegrityError(f"{signature}: signed by a key that {allowed_signers} does not allow "
                             f"({_last_line(found.stderr)}); approve again with an allowed key")
    principal = principals[0]
    checked = _run(["-Y", "verify", "-f", str(allowed_signers), "-I", principal, "-n", NAMESPACE,
                    "-s", str(signature)], data)
    if checked.returncode != 0:
        raise IntegrityError(f"{signature}: does not verify against approval.json "
                             f"({_last_line(checked.stderr)}); the approval was changed after it was signed")
    return principal
