"""Read one message back over IMAP (imaplib, through authbridge) and compare it field by field.

  readback.py match  HOST PORT USER PASSWORD SUBJECT FROM TO MESSAGE-ID BODY-LINE ATTACHMENT
  readback.py absent HOST PORT USER PASSWORD SUBJECT

match: exactly one message in INBOX has SUBJECT; its Subject, From, To and Message-ID equal the
given ones, it has no Bcc header, its text part holds BODY-LINE (UTF-8, decoded from whatever
transfer encoding the client chose) and its one attachment equals the file ATTACHMENT byte for
byte. absent: no message in INBOX has SUBJECT. The last line is "RESULT ok" (exit 0) or
"RESULT mismatch <what>" (exit 4); anything else exits 1.
"""
import email
import email.policy
import imaplib
import sys
import time


def fetch_all(host, port, user, password):
    m = imaplib.IMAP4(host, int(port), timeout=30)
    m.login(user, password)
    typ, _ = m.select("INBOX", readonly=True)
    assert typ == "OK", typ
    typ, data = m.search(None, "ALL")
    assert typ == "OK", typ
    out = []
    for n in data[0].split():
        typ, parts = m.fetch(n, "(RFC822)")
        assert typ == "OK", typ
        out.append(b"".join(p[1] for p in parts if isinstance(p, tuple)))
    m.logout()
    return [email.message_from_bytes(raw, policy=email.policy.default) for raw in out], out


def mismatch(why):
    print(f"RESULT mismatch {why}")
    sys.exit(4)


def main(mode, host, port, user, password, subject, *rest):
    for _ in range(20):  # the delivery may land just after the 250 (bounded: 20 x 0.25 s)
        msgs, raws = fetch_all(host, port, user, password)
        hits = [(m, r) for m, r in zip(msgs, raws) if str(m["Subject"]) == subject]
        if hits or mode == "absent":
            break
        time.sleep(0.25)
    print(f"{len(msgs)} messages in INBOX, {len(hits)} with Subject {subject!r}")
    if mode == "absent":
        if hits:
            mismatch(f"{len(hits)} message(s) with that subject were delivered")
        print("RESULT ok")
        return
    sender, to, message_id, body_line, attachment = rest
    if len(hits) != 1:
        mismatch(f"expected exactly one message with that subject, found {len(hits)}")
    msg, raw = hits[0]
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    print(head.decode(errors="replace"))
    for name, want in (("From", sender), ("To", to), ("Message-ID", f"<{message_id}>")):
        got = str(msg[name] or "")
        if name != "Message-ID":
            got = ", ".join(a.addr_spec for a in msg[name].addresses) if msg[name] else ""
        print(f"{name}: {got!r}")
        if got != want:
            mismatch(f"{name} is {got!r}, expected {want!r}")
    if msg["Bcc"] is not None or b"\nbcc:" in head.lower():
        mismatch(f"a Bcc header reached the recipient: {msg['Bcc']}")
    text = msg.get_body(preferencelist=("plain",))
    content = text.get_content() if text is not None else ""
    print(f"text part ({text['Content-Transfer-Encoding'] if text else None}): {content!r}")
    if body_line not in content.splitlines():
        mismatch(f"the UTF-8 body line {body_line!r} is not in the text part")
    files = [p for p in msg.iter_attachments()]
    if len(files) != 1:
        mismatch(f"expected one attachment, found {len(files)}")
    want = open(attachment, "rb").read()
    got = files[0].get_payload(decode=True)
    print(f"attachment {files[0].get_filename()!r}: {len(got)} bytes, expected {len(want)}")
    if got != want:
        mismatch("the attachment differs from the file sent")
    print("RESULT ok")


if __name__ == "__main__":
    try:
        main(*sys.argv[1:])
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001 - report any client-side failure as one line
        print(f"RESULT error {type(e).__name__}: {e}")
        sys.exit(1)
