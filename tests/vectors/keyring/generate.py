#!/usr/bin/env python3
"""Writes the keyring verification vectors (vectors.json here) and the RSA signature vectors
(../rsa/*.json, in the layout of Project Wycheproof's test files).

Keys are generated afresh on each run and their private halves are never written, so the output
differs between runs while meaning the same; the files in the repository are one such run.
Needs Python 3 and the `cryptography` package (Debian: python3-cryptography).

    python3 tests/vectors/keyring/generate.py
"""

import base64
import hashlib
import hmac
import json
import pathlib
import unicodedata

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

HERE = pathlib.Path(__file__).resolve().parent
RSA_DIR = HERE.parent / "rsa"
PAYLOAD_TYPE = "application/vnd.sigil.template-provenance.v1+json"
NOW = "2027-06-01T00:00:00Z"
SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")
SHA1_OID_DIGEST_INFO = bytes.fromhex("3021300906052b0e03021a05000420")  # SHA-1 OID, 32-byte digest
SHA512_OID_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020305000420")
SHA256_NO_NULL_DIGEST_INFO = bytes.fromhex("302f300b0609608648016503040201" "0420")


def b64(data):
    return base64.b64encode(data).decode()


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def pae(payload_type, payload):
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def spki_der(key):
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def der_len(n):
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def der(tag, body):
    return bytes([tag]) + der_len(len(body)) + body


def pss_oid_spki(key):
    """The same modulus under the RSASSA-PSS algorithm id (no parameters): a second fingerprint
    for one signer."""
    rsa_public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.PKCS1
    )
    oid = der(0x06, bytes.fromhex("2a864886f70d01010a"))
    return der(0x30, der(0x30, oid) + der(0x03, b"\x00" + rsa_public))


def raw_sign(key, encoded):
    """Textbook RSA with the private key over an encoded message we built ourselves."""
    numbers = key.private_numbers()
    n = numbers.public_numbers.n
    k = (n.bit_length() + 7) // 8
    m = int.from_bytes(encoded, "big")
    assert m < n
    return pow(m, numbers.d, n).to_bytes(k, "big")


def emsa_pkcs1(k, t, block=0x01, fill=0xFF, separator=0x00):
    ps = bytes([fill]) * (k - len(t) - 3)
    return bytes([0x00, block]) + ps + bytes([separator]) + t


def sign(key, scheme, message, salt=32):
    if scheme == "rsassa-pkcs1v15-sha256":
        return key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    return key.sign(
        message,
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=salt),
        hashes.SHA256(),
    )


class Signer:
    def __init__(self, name, bits, scheme, spki=None, key=None):
        self.name = name
        self.key = key or rsa.generate_private_key(public_exponent=65537, key_size=bits)
        self.scheme = scheme
        self.spki = spki or spki_der(self.key)
        self.fingerprint = sha256_hex(self.spki)

    def record(self, **window):
        r = {
            "fingerprint": self.fingerprint,
            "spki": b64(self.spki),
            "scheme": self.scheme,
            "valid_from": "2026-01-01T00:00:00Z",
        }
        r.update(window)
        return r

    def signature(self, message, keyid=None, **kw):
        return {"keyid": self.fingerprint if keyid is None else keyid,
                "sig": b64(sign(self.key, self.scheme, message, **kw))}


TEMPLATE = "You are the support assistant of {{company}}. Answer the question below.\n{{question}}\n"
TEMPLATE_4K = (TEMPLATE * 64)[:4096]


def statement(version=1, template=TEMPLATE, template_id="support/answer", prev=None, **over):
    s = {
        "template_id": template_id,
        "version": version,
        "digest": {"sha256": sha256_hex(template.encode())},
        "variables_digest": sha256_hex(b"{}"),
        "prev_digest": prev if version > 1 else None,
        "signer": "vectors",
        "signed_at": "2027-01-01T00:00:00Z",
        "not_after": "2028-01-01T00:00:00Z",
        "validation_digest": None,
    }
    s.update(over)
    return s


def payload_of(s):
    return json.dumps(s, separators=(",", ":")).encode() if isinstance(s, dict) else s


def envelope(payload, signers, payload_type=PAYLOAD_TYPE, extra_sigs=()):
    message = pae(payload_type, payload)
    sigs = [s.signature(message) for s in signers] + list(extra_sigs)
    return {"payloadType": payload_type, "payload": b64(payload), "signatures": sigs}


def main():
    a = Signer("a", 2048, "rsassa-pkcs1v15-sha256")
    b = Signer("b", 2048, "rsassa-pkcs1v15-sha256")
    c = Signer("c", 3072, "rsassa-pss-sha256")
    d = Signer("d", 4096, "rsassa-pkcs1v15-sha256")
    outsider = Signer("outsider", 2048, "rsassa-pkcs1v15-sha256")
    a_pss = Signer("a-pss", 2048, "rsassa-pss-sha256", spki=pss_oid_spki(a.key), key=a.key)
    ring = [a.record(), b.record(), c.record(), d.record()]
    vectors = []

    def add(name, env, expect, template=TEMPLATE, keys=None, **request):
        r = {"envelope": env, "template": template, "keyring": {"keys": keys or ring}, "now": NOW}
        r.update(request)
        vectors.append({"name": name, "request": r, "expect": expect})

    v1 = payload_of(statement())
    v1_digest = sha256_hex(TEMPLATE.encode())
    add("signed by one pinned key", envelope(v1, [a]), "ok")
    add("PSS key of 3072 bits", envelope(v1, [c]), "ok")
    add("2048-bit key, 4 KiB template",
        envelope(payload_of(statement(template=TEMPLATE_4K)), [a]), "ok", template=TEMPLATE_4K)
    add("4096-bit key, 4 KiB template",
        envelope(payload_of(statement(template=TEMPLATE_4K)), [d]), "ok", template=TEMPLATE_4K)
    add("one byte of the template changed", envelope(v1, [a]), "digest_mismatch",
        template=TEMPLATE.replace("support", "Support", 1))
    add("signed by a key outside the keyring", envelope(v1, [outsider]), "unknown_key")
    add("outside key with a non-fingerprint key id",
        {**envelope(v1, []), "signatures": [outsider.signature(pae(PAYLOAD_TYPE, v1), keyid="kms-alias")]},
        "bad_signature")
    add("the template asked for is another", envelope(v1, [a]), "wrong_template",
        template_id="support/other")
    add("the version pinned is another", envelope(v1, [a]), "wrong_version", version=2)

    # Approvals.
    two_of = {"approvals": {"threshold": 2, "of": [a.fingerprint, b.fingerprint, c.fingerprint]}}
    add("2 of 3 approvals by distinct keys", envelope(v1, [a, b]), "ok", template_policy=two_of)
    add("2 of 3 with one approval", envelope(v1, [a]), "not_enough_approvals", template_policy=two_of)
    same_twice = envelope(v1, [], extra_sigs=[
        a.signature(pae(PAYLOAD_TYPE, v1), keyid="publisher"),
        a.signature(pae(PAYLOAD_TYPE, v1), keyid="reviewer"),
    ])
    add("the same key under two ids in a 2-of-n policy", same_twice, "not_enough_approvals",
        template_policy=two_of)
    add("one key signing twice with its fingerprint",
        envelope(v1, [a, a]), "not_enough_approvals", template_policy=two_of)
    add("one modulus under two algorithm ids in a 2-of-n policy", envelope(v1, [a, a_pss]),
        "not_enough_approvals", keys=ring + [a_pss.record()],
        template_policy={"approvals": {"threshold": 2, "of": [a.fingerprint, a_pss.fingerprint, b.fingerprint]}})
    add("a key listed twice in the policy cannot make up a threshold", envelope(v1, [a]),
        "invalid_template_policy",
        template_policy={"approvals": {"threshold": 2, "of": [a.fingerprint, a.fingerprint]}})
    add("a signer outside the policy's approvers does not count", envelope(v1, [a, d]),
        "not_enough_approvals", template_policy=two_of)
    add("a key listed twice in the keyring", envelope(v1, [a]), "invalid_keyring",
        keys=[a.record(), a.record()])
    bad_fp = a.record()
    bad_fp["fingerprint"] = b.fingerprint
    add("a keyring fingerprint that is not its key's", envelope(v1, [a]), "invalid_keyring",
        keys=[bad_fp])

    # Revocation and key windows.
    add("revoked key", envelope(v1, [a]), "revoked_key",
        keys=[a.record(revoked_at="2027-03-01T00:00:00Z")])
    add("key revoked later than now", envelope(v1, [a]), "ok",
        keys=[a.record(revoked_at="2027-09-01T00:00:00Z")])
    add("revoked key among approvals", envelope(v1, [a, b]), "not_enough_approvals",
        keys=[a.record(revoked_at="2027-03-01T00:00:00Z"), b.record()], template_policy={
            "approvals": {"threshold": 2, "of": [a.fingerprint, b.fingerprint]}})
    add("signed before the key's window", envelope(v1, [a]), "outside_key_window",
        keys=[{**a.record(), "valid_from": "2027-02-01T00:00:00Z"}])
    add("signed after the key's window", envelope(v1, [a]), "outside_key_window",
        keys=[a.record(valid_until="2026-12-01T00:00:00Z")])
    add("a retired key's signature, made while it served", envelope(v1, [a]), "expired_key",
        keys=[a.record(valid_until="2027-02-01T00:00:00Z")])
    add("a key retired later than now", envelope(v1, [a]), "ok",
        keys=[a.record(valid_until="2027-09-01T00:00:00Z")])
    add("revoked under one encoding, offered under another", envelope(v1, [a_pss]), "revoked_key",
        keys=[a.record(revoked_at="2027-03-01T00:00:00Z"), a_pss.record()])

    # Times.
    add("expired", envelope(v1, [a]), "expired", now="2028-01-01T00:00:00Z")
    no_time = {"envelope": envelope(v1, [a]), "template": TEMPLATE, "keyring": {"keys": ring}}
    vectors.append({"name": "no time to verify at", "request": no_time, "expect": "invalid_request"})
    future = payload_of(statement(signed_at="2027-06-01T00:10:00Z"))
    add("signed in the future beyond the skew", envelope(future, [a]), "not_yet_valid")
    add("signed in the future within the skew", envelope(future, [a]), "ok", max_skew_seconds=900)

    # Versions and the high-water mark.
    t6, t7, t8 = (TEMPLATE + f"v{n}\n" for n in (6, 7, 8))
    d6, d7 = sha256_hex(t6.encode()), sha256_hex(t7.encode())
    v6 = payload_of(statement(6, t6, prev="0" * 64))
    v7 = payload_of(statement(7, t7, prev=d6))
    hw7 = {"version": 7, "digest": d7}
    add("version 7 after 6", envelope(v7, [a]), "ok", template=t7,
        high_water={"version": 6, "digest": d6})
    add("version 6 after 7", envelope(v6, [a]), "rollback", template=t6, high_water=hw7)
    add("version 6 pinned after 7", envelope(v6, [a]), "ok", template=t6, high_water=hw7,
        version=6, template_policy={"min_version": 5})
    add("version 6 pinned below the minimum", envelope(v6, [a]), "below_min_version", template=t6,
        high_water=hw7, version=6, template_policy={"min_version": 7})
    add("withdrawn version pinned", envelope(v6, [a]), "withdrawn", template=t6, version=6,
        template_policy={"withdrawn": [6]})
    add("version 7 again, same digest", envelope(v7, [a]), "ok", template=t7, high_water=hw7)
    other7 = TEMPLATE + "v7 other\n"
    add("a second version 7", envelope(payload_of(statement(7, other7, prev=d6)), [a]),
        "equivocation", template=other7, high_water=hw7)
    add("version 8 that does not follow 7", envelope(payload_of(statement(8, t8, prev=d6)), [a]),
        "history_mismatch", template=t8, high_water=hw7)

    # Statements that are signed correctly but must not parse.
    s = statement()
    body = json.dumps(s, separators=(",", ":"))
    strict = [
        ("duplicate JSON key", body.replace('"version":1', '"version":1,"version":2')),
        ("case-variant key", body.replace('"version":1', '"Version":1')),
        ("case-variant key beside the real one", body.replace('"version":1', '"version":1,"VERSION":2')),
        ("version 1.0 instead of 1", body.replace('"version":1', '"version":1.0')),
        ("version as a string", body.replace('"version":1', '"version":"1"')),
        ("template id in NFD", body.replace("support/answer", unicodedata.normalize("NFD", "support/caf\u00e9"))),
        ("template id in NFC", body.replace("support/answer", "support/caf\u00e9")),
        ("unparseable body", body[:-1]),
        ("body that is not JSON at all", "not a statement"),
        ("signer with an escape sequence", body.replace('"signer":"vectors"', '"signer":"vec\\u001b[2Jtors"')),
        ("statement as an array of its fields", json.dumps(
            [s["template_id"], s["version"], [s["digest"]["sha256"]], s["variables_digest"],
             s["prev_digest"], s["signer"], s["signed_at"], s["not_after"], s["validation_digest"]],
            separators=(",", ":"))),
        ("digest as an array", body.replace(
            '{"sha256":"%s"}' % s["digest"]["sha256"], '["%s"]' % s["digest"]["sha256"])),
    ]
    for name, text in strict:
        add(f"signed, but {name}", envelope(text.encode(), [a]), "malformed_statement")
    add("signed correctly, another payload type",
        envelope(v1, [a], payload_type="application/vnd.in-toto+json"), "payload_type")

    # Envelopes that name an algorithm, or carry a MAC.
    env = envelope(v1, [a])
    add("envelope with alg none", {**env, "alg": "none"}, "malformed_envelope")
    add("signature with alg HS256",
        {**env, "signatures": [{**env["signatures"][0], "alg": "HS256"}]}, "malformed_envelope")
    mac = hmac.new(a.spki, pae(PAYLOAD_TYPE, v1), hashlib.sha256).digest()
    add("HMAC keyed with the public key's bytes",
        {**env, "signatures": [{"keyid": a.fingerprint, "sig": b64(mac)}]}, "malformed_signature")
    mac_pem = hmac.new(a.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        pae(PAYLOAD_TYPE, v1), hashlib.sha256).digest()
    add("HMAC keyed with the PEM, stretched to the key's length",
        {**env, "signatures": [{"keyid": a.fingerprint, "sig": b64((mac_pem * 8)[:256])}]},
        "bad_signature")
    add("case-variant envelope field", {"PayloadType": PAYLOAD_TYPE, "payload": b64(v1),
                                        "signatures": env["signatures"]}, "malformed_envelope")
    add("envelope as an array of its fields",
        [env["payloadType"], env["payload"], [[x["keyid"], x["sig"]] for x in env["signatures"]]],
        "malformed_envelope")
    add("signature as an array", {**env, "signatures": [[x["keyid"], x["sig"]] for x in env["signatures"]]},
        "malformed_envelope")
    rec = a.record()
    add("keyring record as an array", env, "invalid_keyring",
        keys=[[rec["fingerprint"], rec["spki"], rec["scheme"], rec["valid_from"]]])
    add("template policy as an array", env, "invalid_request",
        template_policy=[1, [1, [a.fingerprint]], []])
    add("high-water mark as an array", env, "invalid_request", high_water=[1, v1_digest])

    # Signatures broken at the RSA level, all by key a over the real message.
    message = pae(PAYLOAD_TYPE, v1)
    k = 256
    digest = hashlib.sha256(message).digest()
    n = a.key.private_numbers().public_numbers.n
    good = sign(a.key, a.scheme, message)
    forged = {
        "DigestInfo with the SHA-1 OID": emsa_pkcs1(k, SHA1_OID_DIGEST_INFO + digest),
        "DigestInfo with the SHA-512 OID": emsa_pkcs1(k, SHA512_OID_DIGEST_INFO + digest),
        "DigestInfo without NULL parameters": emsa_pkcs1(k, SHA256_NO_NULL_DIGEST_INFO + digest),
        "bare digest without DigestInfo": emsa_pkcs1(k, digest),
        "block type 2": emsa_pkcs1(k, SHA256_DIGEST_INFO + digest, block=0x02),
        "padding of zeros": emsa_pkcs1(k, SHA256_DIGEST_INFO + digest, fill=0x00),
        "no zero byte after the padding": emsa_pkcs1(k, SHA256_DIGEST_INFO + digest, separator=0xFF),
        "garbage after the digest": emsa_pkcs1(k, SHA256_DIGEST_INFO + digest + b"\x00" * 16),
        "digest of the payload, not the encoding": emsa_pkcs1(
            k, SHA256_DIGEST_INFO + hashlib.sha256(v1).digest()),
        "digest hashed twice": emsa_pkcs1(k, SHA256_DIGEST_INFO + hashlib.sha256(digest).digest()),
    }
    for name, em in forged.items():
        sig = raw_sign(a.key, em)
        add(f"forged PKCS#1 v1.5: {name}",
            {**env, "signatures": [{"keyid": a.fingerprint, "sig": b64(sig)}]}, "bad_signature")
    s_plus_n = (int.from_bytes(good, "big") + n)
    s_plus_n_bytes = s_plus_n.to_bytes((s_plus_n.bit_length() + 7) // 8, "big")
    broken = [
        ("signature with a leading zero byte", b"\x00" + good, "malformed_signature"),
        ("signature plus the modulus", s_plus_n_bytes,
         "malformed_signature" if len(s_plus_n_bytes) != k else "bad_signature"),
        ("truncated signature", good[:-1], "malformed_signature"),
        ("signature of zero", b"\x00" * k, "bad_signature"),
        ("signature equal to the modulus", n.to_bytes(k, "big"), "bad_signature"),
    ]
    for name, sig, expect in broken:
        add(name, {**env, "signatures": [{"keyid": a.fingerprint, "sig": b64(sig)}]}, expect)

    # An exponent-3 key and Bleichenbacher's forgery for it, which a lax verifier accepts.
    e3 = rsa.generate_private_key(public_exponent=3, key_size=2048)
    e3_spki = spki_der(e3)
    add("exponent-3 key in the keyring", envelope(v1, [a]), "invalid_keyring",
        keys=[{"fingerprint": sha256_hex(e3_spki), "spki": b64(e3_spki),
               "scheme": "rsassa-pkcs1v15-sha256", "valid_from": "2026-01-01T00:00:00Z"}])
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    small_spki = spki_der(small)
    add("1024-bit key in the keyring", envelope(v1, [a]), "invalid_keyring",
        keys=[{"fingerprint": sha256_hex(small_spki), "spki": b64(small_spki),
               "scheme": "rsassa-pkcs1v15-sha256", "valid_from": "2026-01-01T00:00:00Z"}])

    (HERE / "vectors.json").write_text(json.dumps({
        "about": "Verification requests (guard_core::verify_request_json) and the expected result: "
                 "`ok` or a refusal code. Written by generate.py.",
        "vectors": vectors,
    }, indent=1) + "\n")

    write_wycheproof(a, c, d, e3)


def cube_root_forgery(digest_info, bits):
    """Bleichenbacher 2006: for e = 3, a value whose cube starts with a valid-looking prefix
    followed by garbage, accepted by verifiers that do not check the padding's length."""
    k = bits // 8
    prefix = b"\x00\x01\xff\xff\xff\xff\x00" + digest_info
    target = int.from_bytes(prefix + b"\xff" * (k - len(prefix)), "big")
    lo, hi = 0, 1 << (bits // 3 + 2)
    while lo < hi:
        mid = (lo + hi) // 2
        if mid ** 3 < target:
            lo = mid + 1
        else:
            hi = mid
    return lo.to_bytes(k, "big")


def write_wycheproof(a, c, d, e3):
    RSA_DIR.mkdir(exist_ok=True)
    k = 256
    messages = [b"", b"0", b"Test", b"123400", b"x" * 4096]
    tests = []
    tc = 0

    def test(comment, msg, sig, result, flags=()):
        nonlocal tc
        tc += 1
        tests.append({"tcId": tc, "comment": comment, "flags": list(flags), "msg": msg.hex(),
                      "sig": sig.hex(), "result": result})

    for msg in messages:
        test("valid", msg, sign(a.key, a.scheme, msg), "valid")
    msg = b"123400"
    digest = hashlib.sha256(msg).digest()
    good = sign(a.key, a.scheme, msg)
    n = a.key.private_numbers().public_numbers.n
    for comment, em in [
        ("wrong hash OID (SHA-1)", emsa_pkcs1(k, SHA1_OID_DIGEST_INFO + digest)),
        ("wrong hash OID (SHA-512)", emsa_pkcs1(k, SHA512_OID_DIGEST_INFO + digest)),
        ("missing NULL parameters", emsa_pkcs1(k, SHA256_NO_NULL_DIGEST_INFO + digest)),
        ("no DigestInfo", emsa_pkcs1(k, digest)),
        ("block type 2", emsa_pkcs1(k, SHA256_DIGEST_INFO + digest, block=0x02)),
        ("padding of zeros", emsa_pkcs1(k, SHA256_DIGEST_INFO + digest, fill=0x00)),
        ("no separator", emsa_pkcs1(k, SHA256_DIGEST_INFO + digest, separator=0xFF)),
        ("trailing garbage", emsa_pkcs1(k, SHA256_DIGEST_INFO + digest + b"\x01" * 8)),
        ("digest of another message", emsa_pkcs1(k, SHA256_DIGEST_INFO + hashlib.sha256(b"123401").digest())),
    ]:
        test(comment, msg, raw_sign(a.key, em), "invalid", ["ModifiedPadding"])
    test("leading zero byte", msg, b"\x00" + good, "invalid", ["ModifiedSignature"])
    s_plus_n = int.from_bytes(good, "big") + n
    test("signature plus modulus", msg, s_plus_n.to_bytes((s_plus_n.bit_length() + 7) // 8, "big"),
         "invalid", ["ModifiedSignature"])
    test("truncated", msg, good[:-1], "invalid", ["ModifiedSignature"])
    test("empty signature", msg, b"", "invalid", ["ModifiedSignature"])
    test("zero", msg, b"\x00" * k, "invalid", ["ModifiedSignature"])
    test("one", msg, (1).to_bytes(k, "big"), "invalid", ["ModifiedSignature"])
    test("modulus", msg, n.to_bytes(k, "big"), "invalid", ["ModifiedSignature"])
    test("modulus minus one", msg, (n - 1).to_bytes(k, "big"), "invalid", ["ModifiedSignature"])
    flipped = bytearray(good)
    flipped[100] ^= 1
    test("one bit flipped", msg, bytes(flipped), "invalid", ["ModifiedSignature"])
    test("message changed", b"123401", good, "invalid", ["ModifiedMessage"])

    first = tests
    tests = []
    for msg4 in messages:
        test("valid, 4096-bit key", msg4, sign(d.key, d.scheme, msg4), "valid")
    good4 = sign(d.key, d.scheme, msg)
    test("truncated, 4096-bit key", msg, good4[:-1], "invalid", ["ModifiedSignature"])
    test("a 2048-bit key's signature", msg, good, "invalid", ["ModifiedSignature"])
    flipped = bytearray(good4)
    flipped[0] ^= 0x80
    test("top bit flipped", msg, bytes(flipped), "invalid", ["ModifiedSignature"])
    second = tests
    tests = first + second
    pkcs1 = {
        "algorithm": "RSASSA-PKCS1-v1_5",
        "about": "RSASSA-PKCS1-v1_5 with SHA-256 verification tests, laid out as Project "
                 "Wycheproof's rsa_signature test files. Written by ../keyring/generate.py.",
        "numberOfTests": len(tests) + 1,
        "testGroups": [
            {"type": "RsassaPkcs1Verify", "sha": "SHA-256", "keySize": 2048,
             "publicKeyDer": spki_der(a.key).hex(), "tests": first},
            {"type": "RsassaPkcs1Verify", "sha": "SHA-256", "keySize": 4096,
             "publicKeyDer": spki_der(d.key).hex(), "tests": second},
            # An exponent-3 key is refused before any signature is looked at.
            {"type": "RsassaPkcs1Verify", "sha": "SHA-256", "keySize": 2048,
             "publicKeyDer": spki_der(e3).hex(), "keyResult": "invalid", "tests": [{
                 "tcId": len(tests) + 1, "comment": "Bleichenbacher e=3 forgery", "flags": ["SmallPublicKey"],
                 "msg": msg.hex(), "sig": cube_root_forgery(SHA256_DIGEST_INFO + digest, 2048).hex(),
                 "result": "invalid"}]},
        ],
    }
    (RSA_DIR / "rsa_pkcs1_2048_sha256_test.json").write_text(json.dumps(pkcs1, indent=1) + "\n")

    tests = []
    tc = 0
    k = 384
    for msg in messages:
        test("valid", msg, sign(c.key, c.scheme, msg), "valid")
    msg = b"123400"
    good = sign(c.key, c.scheme, msg)
    test("salt of 20 bytes", msg, sign(c.key, c.scheme, msg, salt=20), "invalid", ["WrongSalt"])
    test("salt of 0 bytes", msg, sign(c.key, c.scheme, msg, salt=0), "invalid", ["WrongSalt"])
    test("PKCS#1 v1.5 signature", msg, c.key.sign(msg, padding.PKCS1v15(), hashes.SHA256()),
         "invalid", ["WrongPadding"])
    sha1 = c.key.sign(msg, padding.PSS(mgf=padding.MGF1(hashes.SHA1()), salt_length=32), hashes.SHA256())
    test("MGF1 with SHA-1", msg, sha1, "invalid", ["WrongMgf"])
    test("truncated", msg, good[:-1], "invalid", ["ModifiedSignature"])
    test("leading zero byte", msg, b"\x00" + good, "invalid", ["ModifiedSignature"])
    flipped = bytearray(good)
    flipped[-1] ^= 1  # the 0xbc trailer
    test("trailer changed", msg, bytes(flipped), "invalid", ["ModifiedSignature"])
    test("message changed", b"123401", good, "invalid", ["ModifiedMessage"])
    pss = {
        "algorithm": "RSASSA-PSS",
        "about": "RSASSA-PSS (SHA-256, MGF1-SHA-256, 32-byte salt) verification tests, laid out as "
                 "Project Wycheproof's rsa_pss test files. Written by ../keyring/generate.py.",
        "numberOfTests": len(tests),
        "testGroups": [{"type": "RsassaPssVerify", "sha": "SHA-256", "mgfSha": "SHA-256", "sLen": 32,
                        "keySize": 3072, "publicKeyDer": spki_der(c.key).hex(), "tests": tests}],
    }
    (RSA_DIR / "rsa_pss_3072_sha256_mgf1_32_test.json").write_text(json.dumps(pss, indent=1) + "\n")


if __name__ == "__main__":
    main()
