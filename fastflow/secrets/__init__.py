"""Secrets: SOPS-compatible encrypted files with age keys (the only user of `cryptography`).

Public API for the rest of Fast-Flow; see docs/secrets.md. The runner calls
`identities_for(path, environ)` then `resolve_for_pipeline(path, pipeline, names, identities)`.
"""
import importlib
from typing import Any

# name -> submodule. Loaded on first use (PEP 562): `fastflow run` of a pipeline without
# secrets must not pay for `cryptography` at start-up.
_EXPORTS = {
    "age": ("AgeError", "NoMatchingIdentity", "X25519Identity", "parse_recipient"),
    "fernet": ("KEY_VARIABLE", "ImportPlan", "apply_import", "fernet_key", "plan_import"),
    "edit": ("edit_secrets", "identity_file_text", "write_identity_file"),
    "keys": ("CreationRule", "creation_rule_for", "default_key_file", "find_sops_config",
             "load_identities", "split_recipients"),
    "sopsfile": ("decrypt_file_text", "encrypt_file_text", "recipients_of"),
    "store": ("SecretInfo", "add_recipients", "get_secret", "grant_secret", "identities_for",
              "init_secrets", "list_recipients", "list_secrets", "remove_recipients",
              "remove_secret", "resolve_for_pipeline", "revoke_secret", "rotate_data_key",
              "set_secret", "write_atomic"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "AgeError", "NoMatchingIdentity", "X25519Identity", "parse_recipient",
    "edit_secrets", "identity_file_text", "write_identity_file",
    "CreationRule", "creation_rule_for", "default_key_file", "find_sops_config",
    "load_identities", "split_recipients", "decrypt_file_text", "encrypt_file_text",
    "recipients_of", "write_atomic",
    "SecretInfo", "identities_for", "add_recipients", "get_secret", "grant_secret", "init_secrets",
    "list_recipients", "list_secrets", "remove_recipients", "remove_secret",
    "resolve_for_pipeline", "revoke_secret", "rotate_data_key", "set_secret",
    "KEY_VARIABLE", "ImportPlan", "apply_import", "fernet_key", "plan_import",
]
