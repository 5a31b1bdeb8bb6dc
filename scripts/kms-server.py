"""A KMS-compatible server on 127.0.0.1 for Sigil's KMS tests: moto's KMS, corrected.

    python kms-server.py --port PORT

moto (pinned in scripts/kms-requirements.txt) differs from AWS KMS exactly where Sigil's KMS
signer relies on KMS: it ignores `MessageType=DIGEST` (it hashes the digest again), accepts RAW
messages over 4096 bytes and digests of any length, lets disabled keys sign, signs PSS with the
largest salt instead of the digest's length, answers a failed Verify with `SignatureValid=false`
instead of an error, and leaves `KeySpec` out of GetPublicKey. This launcher replaces moto's
Sign, Verify and GetPublicKey handlers with ones that behave as the KMS API reference describes.

It differs too where the vault's master key relies on KMS, and the launcher corrects that in
moto's KMS model:

- Encrypt, Decrypt, ReEncrypt and GenerateDataKey(WithoutPlaintext) ignore the key's state. Here,
  as in KMS, a disabled key refuses them with DisabledException and a key in any other state but
  Enabled (pending deletion) with KMSInvalidStateException, for the source key of ReEncrypt as
  for its destination; a key that is not ENCRYPT_DECRYPT refuses them with
  InvalidKeyUsageException.
- The encryption context is bound as names and values run together, so {"ab": "c"} decrypts
  what {"a": "bc"} encrypted. Here each name and value is length-prefixed: only the same context
  decrypts, as in KMS. (ReEncrypt already checks the source context and binds the destination
  one.)
- The ciphertext holds the first 36 characters of the key id, which cuts a multi-Region key's
  (`mrk-` and 36 more) short, so nothing encrypted under a multi-Region key decrypts. Here the
  whole key id is kept.
- ReplicateKey copies the key object shallowly: the replica shares the key material and the
  private key (as in KMS, where replicas share key material) but also the primary's aliases,
  grants and multi-Region configuration, so an alias made in one region resolves in the other
  and describing the replica turns the primary into a REPLICA. Here the replica keeps the key
  material and private key and gets its own aliases (none), grants, rotations and configuration,
  is Enabled, and ReplicateKey refuses a single-Region key (UnsupportedOperationException) and a
  region that has the key already (AlreadyExistsException), as KMS does. Asymmetric keys are
  replicated the same way, so a replica signs with the primary's private key.

A test that passes here exercises the same contract as AWS KMS. Everything else is moto's.

When the server listens it prints `ready <port>` on standard output (the tests wait for it).
"""

import argparse
import base64
import copy
import json
import os
import sys
import threading

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from moto.core.exceptions import JsonRESTError
from moto.kms import models, responses, utils
from moto.kms.exceptions import (
    AlreadyExistsException,
    InvalidCiphertextException,
    InvalidKeyUsageException,
    ValidationException,
)

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


class UnsupportedOperationException(JsonRESTError):
    code = 400

    def __init__(self, message):
        super().__init__("UnsupportedOperationException", message)


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


def _check_state(key):
    """KMS refuses every cryptographic operation with a key that is not Enabled."""
    if key.key_state == "Disabled":
        raise DisabledException(f"{key.arn} is disabled.")
    if key.key_state != "Enabled":
        raise KMSInvalidStateException(f"{key.arn} is {key.key_state.lower()}.")


def _usable_key(self, key_id, algorithm):
    """The key, as KMS checks it before any signing operation."""
    self._validate_key_id(key_id)
    key = self.kms_backend.describe_key(key_id)
    _check_state(key)
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
    _check_state(key)
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


# The symmetric operations, corrected in moto's model: GenerateDataKey(WithoutPlaintext) and
# ReEncrypt's destination go through `encrypt`, ReEncrypt's source through `decrypt`.
_moto_encrypt = models.KmsBackend.encrypt
_moto_decrypt = models.KmsBackend.decrypt


def _check_symmetric(key):
    _check_state(key)
    # moto leaves KeyUsage unset when CreateKey omits it; KMS's default is ENCRYPT_DECRYPT.
    if key.key_usage not in (None, "ENCRYPT_DECRYPT"):
        raise InvalidKeyUsageException()


def model_encrypt(self, key_id, plaintext, encryption_context):
    key = self.keys.get(self.any_id_to_key_id(key_id))
    if key is not None:  # moto's own NotFoundException otherwise
        _check_symmetric(key)
    return _moto_encrypt(self, key_id, plaintext, encryption_context)


def model_decrypt(self, ciphertext_blob, encryption_context, key_id=None):
    try:
        named = deserialize_ciphertext_blob(ciphertext_blob).key_id
    except Exception:
        raise InvalidCiphertextException() from None
    key = self.keys.get(named)
    if key is not None:  # moto's own refusal otherwise
        _check_symmetric(key)
    return _moto_decrypt(self, ciphertext_blob, encryption_context, key_id)


# moto calls these three with keyword arguments: the parameter names are moto's.
def serialize_encryption_context(encryption_context):
    """Each name and value length-prefixed, in name order: one form per context."""
    out = bytearray()
    for name, value in sorted(encryption_context.items()):
        for part in (name.encode("utf-8"), value.encode("utf-8")):
            out += len(part).to_bytes(4, "big") + part
    return bytes(out)


def serialize_ciphertext_blob(ciphertext):
    """moto's layout with the key id length-prefixed instead of cut to 36 bytes."""
    key_id = ciphertext.key_id.encode("utf-8")
    return bytes([len(key_id)]) + key_id + ciphertext.iv + ciphertext.tag + ciphertext.ciphertext


def deserialize_ciphertext_blob(ciphertext_blob):
    length = ciphertext_blob[0]
    key_id = ciphertext_blob[1 : 1 + length]
    rest = ciphertext_blob[1 + length :]
    iv, tag, body = (
        rest[: utils.IV_LEN],
        rest[utils.IV_LEN : utils.IV_LEN + utils.TAG_LEN],
        rest[utils.IV_LEN + utils.TAG_LEN :],
    )
    if len(key_id) != length or len(tag) != utils.TAG_LEN:
        raise ValueError("truncated ciphertext")
    return utils.Ciphertext(key_id=key_id.decode("utf-8"), iv=iv, ciphertext=body, tag=tag)


def model_replicate_key(self, key_id, replica_region):
    key = self.keys[self.any_id_to_key_id(key_id)]
    if not key.multi_region:
        raise UnsupportedOperationException(f"{key.arn} is not a multi-Region key.")
    target = models.kms_backends[self.account_id][replica_region]
    if replica_region == self.region_name or key.id in target.keys:
        raise AlreadyExistsException(f"{key.id} already exists in {replica_region}.")
    replica = copy.copy(key)  # shares key_material and private_key, as KMS replicas do
    replica.region = replica_region
    replica.arn = key.arn.replace(f":{self.region_name}:", f":{replica_region}:", 1)
    replica.key_state = "Enabled"
    replica.enabled = True
    replica.aliases = {}
    replica.grants = {}
    replica.rotations = []
    replica_entry = {"Arn": replica.arn, "Region": replica_region}
    key.multi_region_configuration = copy.deepcopy(key.multi_region_configuration)
    key.multi_region_configuration["ReplicaKeys"].append(replica_entry)
    replica.multi_region_configuration = copy.deepcopy(key.multi_region_configuration)
    replica.multi_region_configuration["MultiRegionKeyType"] = "REPLICA"
    target.keys[replica.id] = replica
    return replica


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
    models.KmsBackend.encrypt = model_encrypt
    models.KmsBackend.decrypt = model_decrypt
    models.KmsBackend.replicate_key = model_replicate_key
    utils._serialize_encryption_context = serialize_encryption_context
    utils._serialize_ciphertext_blob = serialize_ciphertext_blob
    utils._deserialize_ciphertext_blob = deserialize_ciphertext_blob

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
