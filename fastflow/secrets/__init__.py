"""Secrets: SOPS-compatible encrypted files with age keys (the only user of `cryptography`).

Public API for the rest of Fast-Flow; see docs/secrets.md. The runner calls
`identities_for(path, environ)` then `resolve_for_pipeline(path, pipeline, names, identities)`.
"""
from fastflow.secrets.age import AgeError, NoMatchingIdentity, X25519Identity, parse_recipient
from fastflow.secrets.edit import edit_secrets, identity_file_text, write_identity_file
from fastflow.secrets.keys import (CreationRule, creation_rule_for, default_key_file,
                                   find_sops_config, load_identities, split_recipients)
from fastflow.secrets.sopsfile import decrypt_file_text, encrypt_file_text, recipients_of
from fastflow.secrets.store import (SecretInfo, add_recipients, get_secret, grant_secret,
                                    identities_for, init_secrets, list_recipients, list_secrets,
                                    remove_recipients, remove_secret, resolve_for_pipeline,
                                    revoke_secret, rotate_data_key, set_secret, write_atomic)

__all__ = [
    "AgeError", "NoMatchingIdentity", "X25519Identity", "parse_recipient",
    "edit_secrets", "identity_file_text", "write_identity_file",
    "CreationRule", "creation_rule_for", "default_key_file", "find_sops_config",
    "load_identities", "split_recipients", "decrypt_file_text", "encrypt_file_text",
    "recipients_of", "write_atomic",
    "SecretInfo", "identities_for", "add_recipients", "get_secret", "grant_secret", "init_secrets",
    "list_recipients", "list_secrets", "remove_recipients", "remove_secret",
    "resolve_for_pipeline", "revoke_secret", "rotate_data_key", "set_secret",
]
