# An independent check of what kiln attaches to an image in a registry:
# plain HTTP to the registry (the OCI distribution API), DSSE's
# pre-authentication encoding and cosign's simple signing payload checked
# with `cryptography`'s ECDSA P-256 — no kiln code.
#
#   python trust.py check REGISTRY REPO DIGEST PUBKEY.pem
#       prints JSON: {"signed": true, "attestations": [{"predicateType",
#       "subjects", "payload"}...]} or exits 1 naming what failed
#   python trust.py tamper REGISTRY REPO DIGEST
#       changes one byte of the first attestation's payload and pushes the
#       changed envelope under the same tag
import base64
import hashlib
import json
import sys
import urllib.request

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

ACCEPT = "application/vnd.oci.image.manifest.v1+json"


def get(url, accept=None):
    req = urllib.request.Request(url)
    if accept:
        req.add_header("Accept", accept)
    with urllib.request.urlopen(req) as r:
        return r.read()


def tag_of(digest, kind):
    return digest.replace(":", "-", 1) + "." + kind


def manifest(reg, repo, tag):
    return json.loads(get(f"http://{reg}/v2/{repo}/manifests/{tag}", ACCEPT))


def blob(reg, repo, digest):
    data = get(f"http://{reg}/v2/{repo}/blobs/{digest}")
    assert "sha256:" + hashlib.sha256(data).hexdigest() == digest, "blob digest"
    return data


def pae(payload_type, body):
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(body), body)


def check(reg, repo, digest, pub):
    key = serialization.load_pem_public_key(open(pub, "rb").read())
    assert isinstance(key.curve, ec.SECP256R1), "a P-256 key"
    sig = manifest(reg, repo, tag_of(digest, "sig"))
    signed = False
    for layer in sig["layers"]:
        assert layer["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
        payload = blob(reg, repo, layer["digest"])
        p = json.loads(payload)
        assert p["critical"]["type"] == "cosign container image signature"
        assert p["critical"]["image"]["docker-manifest-digest"] == digest
        s = base64.b64decode(layer["annotations"]["dev.cosignproject.cosign/signature"])
        key.verify(s, payload, ec.ECDSA(hashes.SHA256()))
        signed = True
    out = []
    att = manifest(reg, repo, tag_of(digest, "att"))
    for layer in att["layers"]:
        assert layer["mediaType"] == "application/vnd.dsse.envelope.v1+json"
        env = json.loads(blob(reg, repo, layer["digest"]))
        body = base64.b64decode(env["payload"])
        assert env["signatures"], "signed"
        for s in env["signatures"]:
            key.verify(
                base64.b64decode(s["sig"]),
                pae(env["payloadType"], body),
                ec.ECDSA(hashes.SHA256()),
            )
        statement = json.loads(body)
        assert statement["_type"] == "https://in-toto.io/Statement/v1"
        assert statement["predicateType"] == layer["annotations"]["predicateType"]
        out.append(
            {
                "predicateType": statement["predicateType"],
                "subjects": [s["digest"]["sha256"] for s in statement["subject"]],
                "payload": body.decode(),
            }
        )
    print(json.dumps({"signed": signed, "attestations": out}))


def put_blob(reg, repo, data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    req = urllib.request.Request(f"http://{reg}/v2/{repo}/blobs/uploads/", method="POST")
    with urllib.request.urlopen(req) as r:
        location = r.headers["Location"]
    if location.startswith("/"):
        location = f"http://{reg}{location}"
    sep = "&" if "?" in location else "?"
    req = urllib.request.Request(
        f"{location}{sep}digest={digest}",
        data=data,
        method="PUT",
        headers={"Content-Type": "application/octet-stream"},
    )
    urllib.request.urlopen(req).read()
    return digest


def tamper(reg, repo, digest):
    tag = tag_of(digest, "att")
    m = manifest(reg, repo, tag)
    layer = m["layers"][0]
    env = json.loads(blob(reg, repo, layer["digest"]))
    body = bytearray(base64.b64decode(env["payload"]))
    body[len(body) // 2] ^= 1  # one byte
    env["payload"] = base64.b64encode(bytes(body)).decode()
    data = json.dumps(env).encode()
    layer["digest"] = put_blob(reg, repo, data)
    layer["size"] = len(data)
    body = json.dumps(m).encode()
    req = urllib.request.Request(
        f"http://{reg}/v2/{repo}/manifests/{tag}",
        data=body,
        method="PUT",
        headers={"Content-Type": ACCEPT},
    )
    urllib.request.urlopen(req).read()


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "check":
        check(*sys.argv[2:6])
    elif cmd == "tamper":
        tamper(*sys.argv[2:5])
    else:
        sys.exit(f"unknown command {cmd}")
