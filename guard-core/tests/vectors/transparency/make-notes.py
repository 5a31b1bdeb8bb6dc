#!/usr/bin/env python3
"""Makes the signed-note and bundle vectors in this folder with openssl.

Run from this folder: `python3 make-notes.py`. Keys are made fresh each run and the private keys
are deleted afterwards; only the public keys and the signed notes are kept.
"""
import base64, hashlib, json, os, subprocess, tempfile

ORIGIN = "sigil.test/audit"

def run(*args, data=None):
    return subprocess.run(args, input=data, capture_output=True, check=True).stdout

def keygen(tmp, name, bits):
    key = os.path.join(tmp, name + ".pem")
    run("openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", f"rsa_keygen_bits:{bits}", "-out", key)
    pub = run("openssl", "pkey", "-in", key, "-pubout")
    open(name + ".pub.pem", "wb").write(pub)
    der = run("openssl", "pkey", "-in", key, "-pubout", "-outform", "DER")
    return key, der

def sign(key, msg, pss):
    opts = ["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:32"] if pss else []
    return run("openssl", "dgst", "-sha256", "-sign", key, *opts, data=msg)

def key_id(name, scheme, der):
    h = hashlib.sha256(name.encode() + b"\n\xff" + b"sigil-rsa/" + scheme.encode() + b"\n" + hashlib.sha256(der).digest())
    return h.digest()[:4]

def line(name, kid, sig):
    return "\u2014 " + name + " " + base64.b64encode(kid + sig).decode() + "\n"

def leaf(data): return hashlib.sha256(b"\0" + data).digest()
def node(l, r): return hashlib.sha256(b"\1" + l + r).digest()

def mth(leaves):
    if len(leaves) == 1: return leaves[0]
    k = 1
    while k * 2 < len(leaves): k *= 2
    return node(mth(leaves[:k]), mth(leaves[k:]))

def path(m, leaves):
    if len(leaves) == 1: return []
    k = 1
    while k * 2 < len(leaves): k *= 2
    if m < k: return path(m, leaves[:k]) + [mth(leaves[k:])]
    return path(m - k, leaves[k:]) + [mth(leaves[:k])]

def checkpoint(origin, size, root):
    return f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n"

PK, PSS = "rsassa-pkcs1v15-sha256", "rsassa-pss-sha256"

with tempfile.TemporaryDirectory() as tmp:
    log, log_der = keygen(tmp, "log", 2048)
    pss, pss_der = keygen(tmp, "pss", 3072)
    other, other_der = keygen(tmp, "other", 2048)
    notes = {}
    root8 = bytes.fromhex("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")
    text = checkpoint(ORIGIN, 8, root8).encode()
    ok_line = line(ORIGIN, key_id(ORIGIN, PK, log_der), sign(log, text, False))
    notes["ok"] = text.decode() + "\n" + ok_line
    notes["pss"] = text.decode() + "\n" + line(ORIGIN, key_id(ORIGIN, PSS, pss_der), sign(pss, text, True))
    witness = line("witness.test/w1", key_id("witness.test/w1", PK, other_der), sign(other, text, False))
    notes["cosigned"] = text.decode() + "\n" + witness + ok_line
    notes["wrong-key"] = text.decode() + "\n" + line(ORIGIN, key_id(ORIGIN, PK, log_der), sign(other, text, False))
    notes["unknown-signer"] = text.decode() + "\n" + line(ORIGIN, key_id(ORIGIN, PK, other_der), sign(other, text, False))
    notes["bad-then-good"] = text.decode() + "\n" + line(ORIGIN, key_id(ORIGIN, PK, log_der), sign(other, text, False)) + ok_line
    other_text = checkpoint("other.test/log", 8, root8).encode()
    notes["origin-mismatch"] = other_text.decode() + "\n" + line(ORIGIN, key_id(ORIGIN, PK, log_der), sign(log, other_text, False))
    notes["pss-under-pkcs1-id"] = text.decode() + "\n" + line(ORIGIN, key_id(ORIGIN, PK, log_der), sign(log, text, True))
    for name, note in notes.items():
        open(f"checkpoint-{name}.note", "w", encoding="utf-8", newline="\n").write(note)

    # A bundle: five entries, the third publishes tests/vectors/templates/envelope.json.
    envelope = json.load(open("../../../../tests/vectors/templates/envelope.json"))
    env_bytes = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode()
    env_digest = hashlib.sha256(env_bytes).hexdigest()
    entries = []
    for seq, kind in enumerate(["key.rotated", "approval", "template.published", "refusal", "admin"]):
        e = {"seq": seq, "time": f"2026-12-03T12:00:0{seq}Z", "kind": kind,
             "actor": "role:publisher" if kind == "template.published" else "psn:" + hashlib.sha256(bytes([seq])).hexdigest()[:32]}
        if kind == "template.published":
            e["subject"] = "demo/support@1"
            e["digests"] = {"envelope": env_digest}
        else:
            e["digests"] = {"record": hashlib.sha256(kind.encode()).hexdigest()}
        entries.append(e)
    leaves = [leaf(json.dumps(e, separators=(",", ":"), ensure_ascii=False).encode()) for e in entries]
    root = mth(leaves)
    cp = checkpoint(ORIGIN, len(leaves), root).encode()
    note = cp.decode() + "\n" + line(ORIGIN, key_id(ORIGIN, PK, log_der), sign(log, cp, False))
    bundle = {"envelope": envelope, "template_policy": {"min_version": 1},
              "log": {"index": 2, "tree_size": len(leaves),
                      "inclusion_proof": [base64.b64encode(h).decode() for h in path(2, leaves)],
                      "checkpoint": note, "entry": entries[2]}}
    open("bundle.json", "w").write(json.dumps(bundle, indent=2, ensure_ascii=False) + "\n")
