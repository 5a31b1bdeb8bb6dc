"""A KMS-compatible server on 127.0.0.1 for Sigil's signing tests: moto's KMS, corrected.

    python kms-server.py --port PORT

moto (pinned in scripts/kms-requirements.txt) differs from AWS KMS exactly where Sigil's KMS
signer relies on KMS: it ignores `MessageType=DIGEST` (it hashes the digest again), accepts RAW
messages over 4096 bytes and digests of any length, lets disabled keys sign, signs PSS with the
largest salt instead of the digest's length, answers a failed Verify with `SignatureValid=false`
instead of an error, and leaves `KeySpec` out of GetPublicKey. This launcher replaces moto's
Sign, Verify and GetPublicKey handlers with ones that behave as the KMS API reference describes,
so a test that passes here exercises the same contract as AWS KMS. Everything else is moto's.

When the server listens it prints `ready <port>` on standard output (the tests wait for it).
"""

import argparse
import base64
import json
import os
import sys
import threading

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from moto.core.exceptions import JsonRESTError
from moto.kms import responses
from moto.kms.exceptions import InvalidKeyUsageException, ValidationException

# AWS KMS refuses RAW messages longer than this.
RAW_LIMIT = 4096

HASHES = {"SHA_256": hashes.SHA256, "SHA_384": hashes.SHA384, "SHA_512": hashes.SHA512}


class DisabledException(JsonRESTError):
    code = 400

    def __init__(self, message):
        super().__init__("DisabledException", message)


class KMSInvalidStateException(JsonRESTError):
    code = 400

    def __init__(self, message):
        super().__init__("KMSInvalidStateException", message)


class KMSInvalidSignatureException(JsonRESTError):
    code = 400

    def __init__(self):
        super().__init__("KMSInvalidSignatureException", "")


def _hash_of(algorithm):
    for suffix, hash_class in HASHES.items():
        if algorithm.endswith(suffix):
            return hash_class()
    raise ValidationException(
        f"1 validation error detected: Value '{algorithm}' at 'SigningAlgorithm' failed to "
        "satisfy constraint: Member must satisfy enum value set: [RSASSA_PSS_SHA_256, "
        "RSASSA_PSS_SHA_384, RSASSA_PSS_SHA_512, RSASSA_PKCS1_V1_5_SHA_256, "
        "RSASSA_PKCS1_V1_5_SHA_384, RSASSA_PKCS1_V1_5_SHA_512, ECDSA_SHA_256, ECDSA_SHA_384, "
        "ECDSA_SHA_512]"
    )


def _usable_key(self, key_id, algorithm):
    """The key, as KMS checks it before any signing operation."""
    self._validate_key_id(key_id)
    key = self.kms_backend.describe_key(key_id)
    if key.key_state == "Disabled":
        raise DisabledException(f"{key.arn} is disabled.")
    if key.key_state != "Enabled":
        raise KMSInvalidStateException(f"{key.arn} is {key.key_state.lower()}.")
    if key.key_usage != "SIGN_VERIFY":
        raise InvalidKeyUsageException()
    if algorithm not in key.signing_algorithms:
        raise InvalidKeyUsageException()
    return key


def _input(self, algorithm):
    """The message as KMS takes it: RAW up to 4096 bytes, DIGEST exactly the hash's length."""
    message = self._get_param("Message")
    if isinstance(message, str):
        message = message.encode("utf-8")
    if not message:
        raise ValidationException(
            "1 validation error detected: Value at 'message' failed to satisfy constraint: "
            "Member must have length greater than or equal to 1"
        )
    message_type = self._get_param("MessageType") or "RAW"
    hash_algorithm = _hash_of(algorithm)
    if message_type == "RAW":
        if len(message) > RAW_LIMIT:
            raise ValidationException(
                "1 validation error detected: Value at 'message' failed to satisfy constraint: "
                f"Member must have length less than or equal to {RAW_LIMIT}"
            )
        return message, hash_algorithm
    if message_type == "DIGEST":
        if len(message) != hash_algorithm.digest_size:
            raise ValidationException(f"Digest is invalid length for algorithm {algorithm}.")
        return message, Prehashed(hash_algorithm)
    raise ValidationException(
        f"1 validation error detected: Value '{message_type}' at 'messageType' failed to "
        "satisfy constraint: Member must satisfy enum value set: [DIGEST, RAW]"
    )


def _padding(algorithm):
    # KMS's PSS salt is as long as the digest (the KMS cryptographic details).
    if algorithm.startswith("RSASSA_PSS_"):
        hash_algorithm = _hash_of(algorithm)
        return padding.PSS(mgf=padding.MGF1(hash_algorithm), salt_length=hash_algorithm.digest_size)
    return padding.PKCS1v15()


def _private(key):
    return key.private_key.private_key


def sign(self):
    algorithm = self._get_param("SigningAlgorithm") or ""
    key = _usable_key(self, self._get_param("KeyId"), algorithm)
    message, hash_algorithm = _input(self, algorithm)
    private = _private(key)
    if isinstance(private, rsa.RSAPrivateKey):
        signature = private.sign(message, _padding(algorithm), hash_algorithm)
    else:
        signature = private.sign(message, ec.ECDSA(hash_algorithm))
    return json.dumps(
        {
            "KeyId": key.arn,
            "Signature": base64.b64encode(signature).decode("ascii"),
            "SigningAlgorithm": algorithm,
        }
    )


def verify(self):
    algorithm = self._get_param("SigningAlgorithm") or ""
    key = _usable_key(self, self._get_param("KeyId"), algorithm)
    message, hash_algorithm = _input(self, algorithm)
    signature = base64.b64decode(self._get_param("Signature") or "")
    public = _private(key).public_key()
    try:
        if isinstance(public, rsa.RSAPublicKey):
            public.verify(signature, message, _padding(algorithm), hash_algorithm)
        else:
            public.verify(signature, message, ec.ECDSA(hash_algorithm))
    except InvalidSignature:
        raise KMSInvalidSignatureException() from None
    return json.dumps({"KeyId": key.arn, "SignatureValid": True, "SigningAlgorithm": algorithm})


def get_public_key(self):
    key_id = self._get_param("KeyId")
    self._validate_key_id(key_id)
    key, public_key = self.kms_backend.get_public_key(key_id)
    if key.key_state == "Disabled":
        raise DisabledException(f"{key.arn} is disabled.")
    answer = {
        "CustomerMasterKeySpec": key.key_spec,
        "KeySpec": key.key_spec,
        "KeyId": key.arn,
        "KeyUsage": key.key_usage,
        "PublicKey": base64.b64encode(public_key).decode("ascii"),
    }
    # KMS names only the algorithms of the key's usage.
    if key.key_usage == "SIGN_VERIFY":
        answer["SigningAlgorithms"] = key.signing_algorithms
    elif key.key_usage == "ENCRYPT_DECRYPT":
        answer["EncryptionAlgorithms"] = key.encryption_algorithms
    return json.dumps(answer)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--exit-with-stdin",
        action="store_true",
        help="exit when standard input closes, so a server outlives no test that was killed",
    )
    args = parser.parse_args()
    if args.exit_with_stdin:
        threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()

    responses.KmsResponse.sign = sign
    responses.KmsResponse.verify = verify
    responses.KmsResponse.get_public_key = get_public_key

    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    app = DomainDispatcherApplication(create_backend_app)
    server = make_server(
        "127.0.0.1", args.port, app, threaded=True, request_handler=MotoRequestHandler
    )
    print(f"ready {server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
