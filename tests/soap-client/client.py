"""A police system's SOAP client, generated at run time by python zeep from the WSDLs the
gateway serves, over mutual TLS. Each scenario prints one JSON line: what the typed reply or the
SOAP Fault said. Usage: client.py BASE CA CERT KEY SCENARIO"""

import base64
import datetime
import json
import sys
import uuid

from requests import Session
from zeep import Client, Settings
from zeep.exceptions import Fault
from zeep.transports import Transport

BIO = "urn:spocgw:bio:1"
FAULT = "{urn:spocgw:fault:1}"


def client(base, ca, cert, key, path):
    session = Session()
    # The police CA alone: no CA bundle or proxy from the environment (requests would let
    # REQUESTS_CA_BUNDLE override the session's CA).
    session.trust_env = False
    session.verify = ca
    session.cert = (cert, key)
    return Client(f"{base}{path}?wsdl", transport=Transport(session=session), settings=Settings(strict=True))


def wsq(n):
    # A WSQ image starts with the SOI marker FF A0; the rest is filler.
    return b"\xff\xa0\xff\xa8" + bytes((i * 37) % 251 for i in range(n - 4))


def bio_common(purpose="IDENTITY_DOUBT", timestamp=None):
    return dict(
        MessageID=str(uuid.uuid4()),
        Timestamp=timestamp or datetime.datetime.now(datetime.timezone.utc),
        Requester=dict(OfficerID="OFF-0001", Authority="Border Police", BorderCrossingPoint="PRG-AIRPORT-T1"),
        Justification=dict(Purpose=purpose, CaseReference="CASE-2026-000123"),
        TravelDocument=dict(IssuingState="CZE", DocumentType="P", DocumentNumber="X1234567",
                            DateOfExpiry=datetime.date(2031, 5, 31)),
    )


def fault(e):
    detail = {}
    if e.detail is not None:
        for gf in e.detail.iter(FAULT + "GatewayFault"):
            for child in gf:
                detail[child.tag.replace(FAULT, "")] = child.text
    return {"fault": e.message, "detail": detail}


def run(base, ca, cert, key, scenario):
    if scenario == "bio":
        c = client(base, ca, cert, key, "/bio/v1")
        img = wsq(600)
        out = {}
        r = c.service.VerifyFingerprint(
            **bio_common(),
            ChipFingerprint=[dict(FingerPosition=1, Format="WSQ", Data=img)],
            LiveFingerprint=[dict(FingerPosition=1, Format="WSQ", Data=img, Quality=80)],
        )
        out["verify"] = {"Result": r.Result, "Score": str(r.Score)}
        r = c.service.CheckIdentity(**bio_common())
        out["identity"] = {"DocumentStatus": r.DocumentStatus, "Surname": r.Holder.Surname,
                           "Address": r.Holder.Address}
        # The same over the SOAP 1.2 binding.
        v12 = c.bind("BioService", "BioSoap12Port")
        r = v12.CheckIdentity(**bio_common())
        out["identity12"] = {"DocumentStatus": r.DocumentStatus}
        # A Python datetime without a zone: refused, and the fault says which field and rule.
        try:
            c.service.CheckIdentity(**bio_common(timestamp=datetime.datetime(2026, 11, 23, 8, 0, 0)))
            out["naive"] = "accepted"
        except Fault as e:
            out["naive"] = fault(e)
        return out
    if scenario == "refused":
        c = client(base, ca, cert, key, "/bio/v1")
        img = wsq(600)
        try:
            c.service.VerifyFingerprint(
                **bio_common(),
                ChipFingerprint=[dict(FingerPosition=1, Format="WSQ", Data=img)],
                LiveFingerprint=[dict(FingerPosition=1, Format="WSQ", Data=img, Quality=80)],
            )
            return {"refused": "no"}
        except Fault as e:
            return fault(e)
    if scenario == "csn":
        c = client(base, ca, cert, key, "/spoc/csn369791")
        out = {}
        r = c.service.GetCACertificates(callerID="CZ", messageID="ZEEP-CA-1")
        out["ca"] = {"result": r.result, "certificates": len(r.certificateSequence.certificate)}
        request = bytes.fromhex("7f2181c8") + bytes(200)
        r = c.service.RequestCertificate(callerID="CZ", messageID="ZEEP-RC-1", certificateRequest=request)
        out["request"] = {"result": r.result}
        r = c.service.GeneralMessage(callerID="CZ", messageID="ZEEP-GM-1", subject="hello", body="from zeep")
        # A response of one element: zeep hands back its value.
        out["general"] = {"result": r if isinstance(r, str) else r.result}
        return out
    raise SystemExit(f"unknown scenario {scenario}")


if __name__ == "__main__":
    print(json.dumps(run(*sys.argv[1:6])))
