"""A software WebAuthn authenticator for tests without a browser.

It produces what a browser's ``PublicKeyCredential.toJSON()`` sends: a P-256 key (ES256),
``none`` attestation (authenticatorData = rpIdHash ‖ flags ‖ signCount ‖ attestedCredentialData,
CBOR-encoded attestation object), clientDataJSON with type/challenge/origin, and assertions
signed over authenticatorData ‖ SHA-256(clientDataJSON). Every field base64url without padding.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

UP, UV, BE, BS, AT = 0x01, 0x04, 0x08, 0x10, 0x40


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class SoftAuthenticator:
    def __init__(self, origin: str, *, rp_id: str = "localhost", user_verified: bool = True,
                 sign_count: int = 0, key=None, credential_id: bytes | None = None):
        self.origin = origin
        self.rp_id = rp_id
        self.user_verified = user_verified
        self.sign_count = sign_count
        self.key = key or ec.generate_private_key(ec.SECP256R1())
        self.credential_id = credential_id or os.urandom(32)
        self.aaguid = bytes(16)

    def clone(self) -> "SoftAuthenticator":
        """A second authenticator holding the same private key and counter (a cloned key)."""
        return SoftAuthenticator(self.origin, rp_id=self.rp_id, user_verified=self.user_verified,
                                 sign_count=self.sign_count, key=self.key, credential_id=self.credential_id)

    @property
    def id(self) -> str:
        return b64u(self.credential_id)

    def cose_key(self) -> bytes:
        numbers = self.key.public_key().public_numbers()
        return cbor2.dumps({1: 2, 3: -7, -1: 1, -2: numbers.x.to_bytes(32, "big"),
                            -3: numbers.y.to_bytes(32, "big")})

    def _flags(self, extra: int = 0) -> bytes:
        return bytes([UP | (UV if self.user_verified else 0) | extra])

    def _client_data(self, kind: str, challenge: str, origin: str | None) -> bytes:
        return json.dumps({"type": kind, "challenge": challenge, "origin": origin or self.origin,
                           "crossOrigin": False}, separators=(",", ":")).encode()

    def create(self, options: dict, *, origin: str | None = None) -> dict:
        """navigator.credentials.create({publicKey: options}) → credential.toJSON()."""
        rp_id = options["rp"].get("id") or self.rp_id
        client_data = self._client_data("webauthn.create", options["challenge"], origin)
        auth_data = (hashlib.sha256(rp_id.encode()).digest() + self._flags(AT)
                     + self.sign_count.to_bytes(4, "big") + self.aaguid
                     + len(self.credential_id).to_bytes(2, "big") + self.credential_id + self.cose_key())
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        return {"id": self.id, "rawId": self.id, "type": "public-key", "authenticatorAttachment": "platform",
                "clientExtensionResults": {},
                "response": {"clientDataJSON": b64u(client_data), "attestationObject": b64u(attestation),
                             "authenticatorData": b64u(auth_data), "transports": ["internal"],
                             "publicKeyAlgorithm": -7}}

    def get(self, options: dict, *, origin: str | None = None, sign_count: int | None = None,
            user_handle: str | None = None) -> dict:
        """navigator.credentials.get({publicKey: options}) → credential.toJSON(). The counter
        goes up by one unless ``sign_count`` says what to send."""
        if sign_count is None:
            self.sign_count += 1
            sign_count = self.sign_count
        rp_id = options.get("rpId") or self.rp_id
        client_data = self._client_data("webauthn.get", options["challenge"], origin)
        auth_data = hashlib.sha256(rp_id.encode()).digest() + self._flags() + sign_count.to_bytes(4, "big")
        signature = self.key.sign(auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256()))
        return {"id": self.id, "rawId": self.id, "type": "public-key", "authenticatorAttachment": "platform",
                "clientExtensionResults": {},
                "response": {"clientDataJSON": b64u(client_data), "authenticatorData": b64u(auth_data),
                             "signature": b64u(signature), "userHandle": user_handle}}
