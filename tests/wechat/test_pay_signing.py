"""The signature code, pinned by the official vectors (research/wechat.md) and round-tripped through the SDK."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from app.wechat.pay import (
    aead_decrypt,
    aead_encrypt,
    load_private_key,
    load_public_key,
    pay_sign_message,
    request_sign_message,
    response_sign_message,
    rsa_sign,
    rsa_verify,
    v2_sign,
)

# https://pay.weixin.qq.com/wiki/doc/api/jsapi.php?chapter=4_3 (签名算法, 举例)
V2_PARAMS = {
    "appid": "wxd930ea5d5a258f4f",
    "mch_id": "10000100",
    "device_info": "1000",
    "body": "test",
    "nonce_str": "ibuaiVcKdpRxkhJA",
}
V2_KEY = "192006250b4c09247ec02edce69f6a2d"


def test_v2_md5_official_vector() -> None:
    assert v2_sign(V2_PARAMS, V2_KEY, "MD5") == "9A0A8659F005D6984697E2CA0A9CF3B7"


def test_v2_hmac_sha256_official_vector() -> None:
    assert (
        v2_sign(V2_PARAMS, V2_KEY, "HMAC-SHA256")
        == "6A9AE1657590FD6257D693A078E1C3E4BB6BA4DC30B23E0EE2496E54170DACD6"
    )


def test_v2_empty_values_and_sign_field_are_skipped() -> None:
    assert v2_sign({**V2_PARAMS, "sign": "X", "attach": ""}, V2_KEY) == "9A0A8659F005D6984697E2CA0A9CF3B7"
    with pytest.raises(ValueError):
        v2_sign(V2_PARAMS, V2_KEY, "SHA1")


def test_v2_requestpayment_paysign_official_vector() -> None:
    # https://pay.weixin.qq.com/doc/v2/merchant/4011939566
    params = {
        "appId": "wxd678efh567hg6787",
        "nonceStr": "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
        "package": "prepay_id=wx2017033010242291fcfe0db70013231072",
        "signType": "MD5",
        "timeStamp": "1490840662",
    }
    assert v2_sign(params, "qazwsxedcrfvtgbyhnujmikolp111111") == "22D9B4E54AB1950F51E0649E8810ACD6"


def test_v3_sign_messages_match_the_documented_layout() -> None:
    # 签名生成 example: GET /v3/certificates with an empty body
    assert (
        request_sign_message("GET", "/v3/certificates", "1554208460", "593BEC0C930BF1AFEB40B4A08C8FB242", "")
        == "GET\n/v3/certificates\n1554208460\n593BEC0C930BF1AFEB40B4A08C8FB242\n\n"
    )
    assert response_sign_message("1", "N", '{"a":1}') == '1\nN\n{"a":1}\n'
    assert pay_sign_message("wx1", "2", "N", "prepay_id=wx9") == "wx1\n2\nN\nprepay_id=wx9\n"


def _keypair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


def test_rsa_sign_is_deterministic_and_verifies_only_with_its_key() -> None:
    private, public = _keypair()
    _, other_public = _keypair()
    message = response_sign_message("1700000000", "ABC", "{}")
    sig = rsa_sign(load_private_key(private), message)
    assert sig == rsa_sign(load_private_key(private), message)  # PKCS#1 v1.5: deterministic
    assert len(base64.b64decode(sig)) == 256
    assert rsa_verify(load_public_key(public), message, sig)
    assert not rsa_verify(load_public_key(public), message + " ", sig)
    assert not rsa_verify(load_public_key(other_public), message, sig)
    assert not rsa_verify(load_public_key(public), message, "not base64!!")


def test_aead_round_trip_and_tamper_detection() -> None:
    key = "0123456789abcdef0123456789abcdef"
    ct = aead_encrypt(key, "0123456789ab", '{"x":"支付成功"}', "transaction")
    assert aead_decrypt(key, "0123456789ab", ct, "transaction") == '{"x":"支付成功"}'
    assert aead_decrypt(key, "0123456789ab", ct, "refund") is None  # associated data is bound
    assert aead_decrypt("f" * 32, "0123456789ab", ct, "transaction") is None
    raw = bytearray(base64.b64decode(ct))
    raw[0] ^= 1
    assert aead_decrypt(key, "0123456789ab", base64.b64encode(bytes(raw)).decode(), "transaction") is None
