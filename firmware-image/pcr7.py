#!/usr/bin/env python3
"""PCR 7 of the reference platform (OVMF) booting the signed UKI, predicted from the variable
store the build enrolled (firmware-image/out/OVMF_VARS.fd) and the db certificate that signs
the UKI.

What the firmware measures into PCR 7 (TCG PC Client Platform Firmware Profile, 3.3.4.8 and
10.4.4; edk2's Tcg2Dxe and DxeImageVerificationLib):
  1. EV_EFI_VARIABLE_DRIVER_CONFIG for SecureBoot, PK, KEK, db and dbx, in that order, each a
     UEFI_VARIABLE_DATA (vendor GUID, name length, data length, UTF-16 name, data); a variable
     that does not exist is measured with no data. SecureBoot is the firmware's volatile
     variable: one byte, 1 when Secure Boot is enforced.
  2. EV_SEPARATOR (four zero bytes).
  3. EV_EFI_VARIABLE_AUTHORITY for the db entry that verified the UKI: a UEFI_VARIABLE_DATA of
     db holding that one EFI_SIGNATURE_DATA (owner GUID, certificate DER).
Each event extends PCR 7 (SHA-256 bank) with the digest of its data. A real machine has its
own PK, KEK and option ROMs: its PCR 7 is recorded from its event log at acceptance
(docs/appliance.md).

Usage: pcr7.py VARS.fd DB_CERT.pem  ->  JSON on stdout: {"7": hex, "secure_boot": ..., ...}
"""

import hashlib
import json
import ssl
import struct
import sys
import uuid

from virt.firmware.varstore.edk2 import Edk2VarStore

GLOBAL = uuid.UUID("8be4df61-93ca-11d2-aa0d-00e098032b8c")
IMAGE_SECURITY = uuid.UUID("d719b2cb-3d3a-4596-a3bc-dad00e67656f")
X509 = uuid.UUID("a5c059a1-94e4-4aa7-87b5-ab155c2bf072")


def variable_data(guid, name, data):
    encoded = name.encode("utf-16-le")
    return guid.bytes_le + struct.pack("<QQ", len(name), len(data)) + encoded + data


def signature_entries(esl):
    """(type, owner, data) of every EFI_SIGNATURE_DATA in an EFI_SIGNATURE_LIST sequence."""
    at = 0
    while at + 28 <= len(esl):
        kind = uuid.UUID(bytes_le=esl[at:at + 16])
        list_size, header_size, sig_size = struct.unpack_from("<III", esl, at + 16)
        first = at + 28 + header_size
        for entry in range(first, at + list_size, sig_size):
            yield kind, esl[entry:entry + 16], esl[entry + 16:entry + sig_size]
        at += list_size


def main():
    store, cert = sys.argv[1], sys.argv[2]
    variables = Edk2VarStore(store).get_varlist()
    get = lambda name: bytes(variables[name].data) if name in variables else b""
    enforced = bool(variables.get("PK")) and get("SecureBootEnable") == b"\x01"
    pcr = bytes(32)
    extend = lambda data: hashlib.sha256(pcr + hashlib.sha256(data).digest()).digest()
    measured = [(GLOBAL, "SecureBoot", b"\x01" if enforced else b"\x00"), (GLOBAL, "PK", get("PK")),
                (GLOBAL, "KEK", get("KEK")), (IMAGE_SECURITY, "db", get("db")), (IMAGE_SECURITY, "dbx", get("dbx"))]
    for guid, name, data in measured:
        pcr = extend(variable_data(guid, name, data))
    pcr = extend(bytes(4))
    der = ssl.PEM_cert_to_DER_cert(open(cert).read())
    owners = [owner for kind, owner, data in signature_entries(get("db")) if kind == X509 and data == der]
    if not owners:
        sys.exit(f"pcr7.py: {cert} is not in the db of {store}")
    pcr = extend(variable_data(IMAGE_SECURITY, "db", owners[0] + der))
    json.dump({
        "7": pcr.hex(),
        "secure_boot": enforced,
        "pk_sha256": hashlib.sha256(get("PK")).hexdigest(),
        "kek_sha256": hashlib.sha256(get("KEK")).hexdigest(),
        "db_sha256": hashlib.sha256(get("db")).hexdigest(),
        "dbx_sha256": hashlib.sha256(get("dbx")).hexdigest(),
        "db_authority_sha256": hashlib.sha256(der).hexdigest(),
    }, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
