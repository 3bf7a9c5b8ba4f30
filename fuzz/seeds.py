#!/usr/bin/env python3
"""Regenerate fuzz/seeds/*/seed-* from the client transcripts (../shared/transcripts, see its
README for the C:/S: format) plus a few hand-written Exchange Online dialogues (FACTS.md).

Each seed is a fuzz input: byte 0 = configuration (see src/lib.rs `Config`), bytes 1-2 = split
point, then the bytes. Usage: python3 fuzz/seeds.py [TRANSCRIPTS_DIR]
"""
import base64, os, re, sys

here = os.path.dirname(os.path.abspath(__file__))
src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "..", "shared", "transcripts")
corpus = os.path.join(here, "seeds")


def unescape(s):
    return re.sub(rb"\\x([0-9a-fA-F]{2})", lambda m: bytes([int(m.group(1), 16)]), s.encode())


def sides(path):
    c, s = [], []
    for line in open(path, encoding="utf-8"):
        line = line.rstrip("\n")
        if line.startswith("C: "):
            c.append(unescape(line[3:]))
        elif line.startswith("S: "):
            s.append(unescape(line[3:]))
    return b"".join(l + b"\r\n" for l in c), b"".join(l + b"\r\n" for l in s)


def relay_seed(name, cfg, script, client, split=0x10):
    """A relay input: script length, the connector's reply script, then the client's bytes
    (see src/relay.rs `RelayInput`)."""
    write("relay", name, cfg, bytes([len(script)]) + script + client, split)


def write(target, name, cfg, data, split=0x10):
    d = os.path.join(corpus, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(bytes([cfg, split & 0xFF, split >> 8]) + data[:4096])


if os.path.isdir(src):
    for fn in sorted(os.listdir(src)):
        if not fn.endswith(".txt") or fn == "README.md":
            continue
        proto = fn.split("-")[0]
        client, server = sides(os.path.join(src, fn))
        name = fn[:-4]
        # caps known (bit 0); client TLS leg StartTls (bits 1-2 = 01) for the STARTTLS recordings
        tls = 0x02 if ("starttls" in name or "stls" in name or "-tls" in name) else 0
        if proto == "smtp":
            write("smtp_client", name, 0x01 | tls, client)
            write("smtp_upstream", name, 0x01, server)
            # The relay sees what the client sends after its login, from the first MAIL on.
            at = client.upper().find(b"MAIL FROM")
            if at >= 0:
                relay_seed(name, 0x00, b"", client[at:])
        elif proto == "imap":
            write("imap_client", name, 0x01 | tls, client)
            write("imap_upstream", name, 0x01, server)
        elif proto == "pop3":
            write("pop3", "client-" + name, 0x01 | tls, client)
            write("pop3", "upstream-" + name, 0x81, server)

# Exchange Online as FACTS.md describes it (the upstream side, bit 4 = STARTTLS port).
write("smtp_upstream", "exchange-587", 0x11,
      b"220 BN0PR04CA0001.outlook.office365.com Microsoft ESMTP MAIL Service ready at Sun, 22 Nov 2026 02:46:49 +0000\r\n"
      b"250-BN0PR04CA0001.outlook.office365.com Hello [127.0.0.1]\r\n250-SIZE 157286400\r\n250-PIPELINING\r\n"
      b"250-DSN\r\n250-ENHANCEDSTATUSCODES\r\n250-STARTTLS\r\n250-8BITMIME\r\n250-BINARYMIME\r\n250-CHUNKING\r\n250 SMTPUTF8\r\n"
      b"220 2.0.0 SMTP server ready\r\n"
      b"250-BN0PR04CA0001.outlook.office365.com Hello [127.0.0.1]\r\n250-SIZE 157286400\r\n250-PIPELINING\r\n"
      b"250-DSN\r\n250-ENHANCEDSTATUSCODES\r\n250-AUTH LOGIN XOAUTH2\r\n250-8BITMIME\r\n250-BINARYMIME\r\n250-CHUNKING\r\n250 SMTPUTF8\r\n"
      b"334 eyJzdGF0dXMiOiI0MDEifQ==\r\n535 5.7.3 Authentication unsuccessful [BN0PR04CA0001]\r\n235 2.7.0 Authentication successful\r\n")
write("smtp_upstream", "exchange-465", 0x01,
      b"220 smtp.office365.com ESMTP\r\n250-smtp.office365.com Hello\r\n250-AUTH LOGIN XOAUTH2\r\n250 SMTPUTF8\r\n"
      b"535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant.\r\n")
write("imap_upstream", "exchange-993", 0x01,
      b"* OK The Microsoft Exchange IMAP4 service is ready. [QgBOADAAUABSADAANABDAEEAMAAwADAAMQAuAA==]\r\n"
      b"* CAPABILITY IMAP4 IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2 SASL-IR UIDPLUS MOVE ID UNSELECT CHILDREN IDLE NAMESPACE LITERAL+\r\n"
      b"A0 OK CAPABILITY completed.\r\n* 1 EXISTS\r\n* ID (\"name\" {4}\r\nExch)\r\nA1 OK AUTHENTICATE completed.\r\n")
write("imap_upstream", "exchange-143-starttls", 0x11,
      b"* OK IMAP ready\r\nA0 OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] ok\r\nA1 OK Begin TLS\r\n"
      b"* CAPABILITY IMAP4rev1 AUTH=XOAUTH2\r\nA2 OK done\r\n+ eyJzdGF0dXMiOiI0MDEifQ==\r\nA3 NO AUTHENTICATE failed.\r\n")
write("pop3", "upstream-exchange-995", 0x81,
      b"+OK The Microsoft Exchange POP3 service is ready.\r\n+OK\r\nTOP\r\nUIDL\r\nSASL PLAIN XOAUTH2\r\nUSER\r\n.\r\n+ \r\n+OK User successfully authenticated.\r\n")
write("pop3", "upstream-stls", 0x91,
      b"+OK ready\r\n+OK\r\nSTLS\r\n.\r\n+OK Begin TLS\r\n+OK\r\nSASL XOAUTH2\r\n.\r\n+ \r\n-ERR Authentication failure\r\n")
write("imap_client", "literal-plus-and-auth", 0x09,
      b"a1 CAPABILITY\r\na2 LOGIN {4+}\r\nglpi {6}\r\nsecret\r\na3 AUTHENTICATE PLAIN\r\nAGdscGkAc2VjcmV0\r\n")
write("imap_client", "login-roundtrip", 0x05, b"glpi\xffcorrect horse \"battery\" \\staple")
for name, data in [
    ("plain-empty-authzid", b"\x00glpi\x00secret"),
    ("plain-authzid", b"glpi\x00glpi\x00pa ss"),
    ("b64-login", base64.b64encode(b"glpi")),
    ("cancel", b"*"),
    ("empty", b"="),
]:
    write("sasl", name, 0, data)
for f in os.listdir(os.path.join(corpus, "sasl")):
    # sasl takes raw data (no configuration bytes)
    p = os.path.join(corpus, "sasl", f)
    data = open(p, "rb").read()[3:]
    open(p, "wb").write(data)
write("xoauth2", "microsoft-vector", 0, b"")
open(os.path.join(corpus, "xoauth2", "seed-microsoft-vector"), "wb").write(
    b"test@contoso.onmicrosoft.com\x00EwBAAl3BAAUFFpUAo7J3Ve0bjLBWZWCclRC3EoAA")

# The relay (cfg bits 0-1 pick allowed_senders: 1 = tickets@contoso.com and @glpi.contoso.com).
GLPI_MESSAGE = (b"MAIL FROM:<tickets@contoso.com> SIZE=300\r\nRCPT TO:<alerts@contoso.com>\r\nDATA\r\n"
                b"From: GLPI <tickets@contoso.com>\r\nSubject: ticket\r\n\r\n..stuffed\r\nbody\r\n.\r\n")
relay_seed("glpi-session", 0x01, b"", b"EHLO glpi\r\n" + GLPI_MESSAGE + b"QUIT\r\n")
relay_seed("connector-refuses", 0x01, bytes([0, 2, 0, 1, 3, 4]), GLPI_MESSAGE + GLPI_MESSAGE + b"RSET\r\nQUIT\r\n")
relay_seed("connector-closes", 0x01, bytes([0, 0, 5]), GLPI_MESSAGE + b"QUIT\r\n")
SMUGGLED = b"MAIL FROM:<ceo@evil.example>\r\nRCPT TO:<alerts@contoso.com>\r\nDATA\r\nforged\r\n"
for name, ending in (("lf-dot-crlf", b"\n.\r\n"), ("lf-dot-lf", b"\n.\n"), ("cr-dot-cr", b"\r.\r"),
                     ("crlf-dot-lf", b"\r\n.\n")):
    relay_seed("smuggle-" + name, 0x01, b"",
               b"MAIL FROM:<tickets@contoso.com>\r\nRCPT TO:<alerts@contoso.com>\r\nDATA\r\nSubject: x\r\n\r\nhello"
               + ending + SMUGGLED + b"\r\n.\r\nRSET\r\n" + GLPI_MESSAGE + b"QUIT\r\n")
relay_seed("bypass-forms", 0x01, b"",
           b" MAIL FROM:<ceo@evil.example>\r\nMAIL\tFROM:<ceo@evil.example>\r\nXCLIENT ADDR=192.0.2.1\r\n"
           b"XFORWARD NAME=x\r\nAUTH PLAIN AGEAYg==\r\nETRN contoso.com\r\nVRFY ceo\r\nEXPN staff\r\n"
           b"BDAT 5 LAST\r\nTURN\r\nNOOP\x00MAIL FROM:<ceo@evil.example>\r\nNOOP\rMAIL FROM:<ceo@evil.example>\r\n"
           b"MAIL FROM:<\"tickets@contoso.com>\"@evil.example>\r\nMAIL FROM\xc3\xa9:<a@b>\r\n"
           b"MAIL FROM:<@relay.example,@b.example:tickets@contoso.com> BODY=8BITMIME\r\n"
           b"MAIL FROM:<>\r\nMAIL FROM:<\"quoted local\"@glpi.contoso.com> SMTPUTF8\r\nQUIT\r\n")
relay_seed("overlong-line", 0x09, b"", b"MAIL FROM:<" + b"a" * 100 + b"@contoso.com>\r\nNOOP\r\n")
relay_seed("quoted-local-part", 0x02, b"",
           b"MAIL FROM:<\"tickets@contoso.com>\"@evil.example>\r\nRCPT TO:<alerts@contoso.com>\r\n"
           b"MAIL FROM:<\"tickets\"@Contoso.com>\r\nMAIL FROM:<\"a\\\\\"b\"@contoso.com>\r\nQUIT\r\n")

# The piped SMTP session's reply watch: byte 0 = split selector, then upstream bytes (replies only).
def reply_watch_seed(name, sel, data):
    d = os.path.join(corpus, "smtp_reply_watch")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(bytes([sel]) + data)


_, PHPMAILER_REPLIES = sides(os.path.join(src, "smtp-phpmailer-glpi10-login.txt"))
reply_watch_seed("glpi-session", 0x40, PHPMAILER_REPLIES)
reply_watch_seed("send-as-denied", 0x80,
                 b"250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n354 Start mail input; end with <CRLF>.<CRLF>\r\n"
                 b"554 5.2.252 SendAsDenied; tickets@contoso.com not allowed to send as boss@contoso.com; "
                 b"STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied\r\n")
reply_watch_seed("multiline", 0x13,
                 b"550-5.7.60 SMTP; Client does not have permissions\r\n550 to send as this sender\r\n")
reply_watch_seed("throttled", 0x07, b"432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded [h]\n")
reply_watch_seed("direct-send", 0xff,
                 b"550 5.7.68 TenantInboundAttribution; Direct Send not allowed for this organization from unauthorized sources [h]\r\n")
reply_watch_seed("long-line", 0x21, b"554 " + b"x" * 600 + b" SendAsDenied\r\n250 ok\r\n")
