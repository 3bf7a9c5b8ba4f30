<?php
// The bytes GLPI 9.5/10/11's mail collector (laminas-mail Storage\Imap / Storage\Pop3) sends,
// re-created without the library (it is not packaged in Debian): see shared/FACTS.md and the
// transcripts imap-laminas-glpi10.txt, pop3-laminas-glpi10.txt.
//   php laminas.php imap|pop3 none|tls|ssl HOST PORT USER PASSWORD
// IMAP: greeting must start "* OK"; no CAPABILITY; (tls: "TAG1 STARTTLS" first);
//   TAGn LOGIN "user" "pass" with only \ and " escaped (a value holding LF goes as a {N} literal
//   and needs a "+ " continuation); OK judged on the 2 characters after the tag;
//   TAGn SELECT "INBOX"; SEARCH ALL twice; per message FETCH n (FLAGS RFC822.HEADER),
//   FETCH n (UID), FETCH n (RFC822.TEXT); LOGOUT.
// POP3: no CAPA; (tls: STLS); USER / PASS (raw); STAT twice; per message TOP n 0, UIDL n, RETR n;
//   QUIT.
// Every message (header + text) goes to stdout between "=== message N" lines; the result is the
// last line: "RESULT ok" (exit 0) or "RESULT refused <server line>" (exit 3).

[, $proto, $tls, $host, $port, $user, $password] = $argv;

$ctx = stream_context_create(['ssl' => [
    'verify_peer' => false,
    'verify_peer_name' => false,
    'allow_self_signed' => true,
]]);
$scheme = $tls === 'ssl' ? 'ssl' : 'tcp';
$fp = @stream_socket_client("$scheme://$host:$port", $errno, $errstr, 30, STREAM_CLIENT_CONNECT, $ctx);
if (!$fp) {
    fail("cannot connect: $errstr");
}
stream_set_timeout($fp, 30);

function fail(string $why): never
{
    echo "RESULT error $why\n";
    exit(1);
}

function refused(string $line): never
{
    echo 'RESULT refused ' . rtrim($line) . "\n";
    exit(3);
}

function line($fp): string
{
    $l = fgets($fp);
    if ($l === false) {
        fail('connection closed');
    }
    fwrite(STDERR, 'S: ' . rtrim($l, "\r\n") . "\n");
    return $l;
}

function send($fp, string $bytes): void
{
    fwrite(STDERR, 'C: ' . rtrim($bytes, "\r\n") . "\n");
    fwrite($fp, $bytes);
}

function starttls($fp): void
{
    if (!stream_socket_enable_crypto($fp, true, STREAM_CRYPTO_METHOD_TLSv1_2_CLIENT | STREAM_CRYPTO_METHOD_TLSv1_3_CLIENT)) {
        fail('TLS handshake failed');
    }
}

// ---- IMAP (laminas Protocol\Imap) ----

/** One response item: a line with its literals inlined. */
function imap_item($fp): string
{
    $all = '';
    while (true) {
        $l = line($fp);
        $all .= $l;
        if (preg_match('/\{(\d+)\}\r\n$/', $l, $m)) {
            $n = (int) $m[1];
            $data = '';
            while (strlen($data) < $n) {
                $chunk = fread($fp, $n - strlen($data));
                if ($chunk === false || $chunk === '') {
                    fail('connection closed inside a literal');
                }
                $data .= $chunk;
            }
            $all .= $data;
            continue;
        }
        return $all;
    }
}

$tag = 0;
/** Send a command, collect untagged items, return [items, tagged line]. */
function imap_cmd($fp, string $cmd, array $literals = []): array
{
    global $tag;
    $t = 'TAG' . ++$tag;
    if ($literals) {
        // laminas: the line up to the literal, wait for "+ ", then the literal and the rest.
        send($fp, "$t $cmd\r\n");
        $cont = line($fp);
        if (substr($cont, 0, 2) !== '+ ') {
            refused($cont);
        }
        send($fp, implode('', $literals) . "\r\n");
    } else {
        send($fp, "$t $cmd\r\n");
    }
    $items = [];
    while (true) {
        $item = imap_item($fp);
        if (str_starts_with($item, "$t ")) {
            return [$items, $item];
        }
        $items[] = $item;
    }
}

function imap_ok(string $tagged): bool
{
    $rest = substr($tagged, strpos($tagged, ' ') + 1);
    return substr($rest, 0, 2) === 'OK';
}

function escape_string(string $s): array
{
    if (str_contains($s, "\n")) {
        return ['{' . strlen($s) . '}', $s];
    }
    return ['"' . addcslashes($s, '\\"') . '"', null];
}

function imap(string $tls, $fp, string $user, string $password): void
{
    $greeting = line($fp);
    if (substr($greeting, 0, 4) !== '* OK') {
        refused($greeting);
    }
    if ($tls === 'tls') {
        [, $tagged] = imap_cmd($fp, 'STARTTLS');
        if (!imap_ok($tagged)) {
            refused($tagged);
        }
        starttls($fp);
    }
    // laminas writes the command up to the first literal, waits for "+ ", then writes the
    // literal, the rest of the line and CRLF in one go (only the password can hold a LF here).
    [$u, $ulit] = escape_string($user);
    [$p, $plit] = escape_string($password);
    if ($ulit !== null) {
        fail('a user name with a LF is not used by this suite');
    }
    $literals = $plit === null ? [] : [$plit];
    [, $tagged] = imap_cmd($fp, "LOGIN $u $p", $literals);
    if (!imap_ok($tagged)) {
        imap_cmd($fp, 'LOGOUT');
        refused($tagged);
    }
    [, $tagged] = imap_cmd($fp, 'SELECT "INBOX"');
    if (!imap_ok($tagged)) {
        refused($tagged);
    }
    imap_cmd($fp, 'SEARCH ALL');
    [$items, $tagged] = imap_cmd($fp, 'SEARCH ALL');
    $ids = [];
    foreach ($items as $it) {
        if (str_starts_with($it, '* SEARCH')) {
            $ids = array_merge($ids, preg_split('/\s+/', trim(substr($it, 8)), -1, PREG_SPLIT_NO_EMPTY));
        }
    }
    foreach ($ids as $n) {
        [$h] = imap_cmd($fp, "FETCH $n (FLAGS RFC822.HEADER)");
        [$u] = imap_cmd($fp, "FETCH $n (UID)");
        [$b, $tagged] = imap_cmd($fp, "FETCH $n (RFC822.TEXT)");
        if (!imap_ok($tagged)) {
            refused($tagged);
        }
        echo "=== message $n\n" . implode('', $h) . implode('', $u) . implode('', $b) . "\n";
    }
    [, $tagged] = imap_cmd($fp, 'LOGOUT');
    echo "RESULT ok\n";
}

// ---- POP3 (laminas Protocol\Pop3) ----

function pop_cmd($fp, string $cmd, bool $multi = false): string
{
    send($fp, "$cmd\r\n");
    $first = line($fp);
    if (substr($first, 0, 3) !== '+OK') {
        refused($first);
    }
    if (!$multi) {
        return $first;
    }
    $data = '';
    while (true) {
        $l = fgets($fp);
        if ($l === false) {
            fail('connection closed inside a multi-line reply');
        }
        if ($l === ".\r\n") {
            return $data;
        }
        if ($l[0] === '.') {
            $l = substr($l, 1);
        }
        $data .= $l;
    }
}

function pop3(string $tls, $fp, string $user, string $password): void
{
    $greeting = line($fp);
    if (substr($greeting, 0, 3) !== '+OK') {
        refused($greeting);
    }
    if (preg_match('/<.*@.*>/', $greeting)) {
        fail('greeting carries an APOP timestamp: laminas would try APOP first');
    }
    if ($tls === 'tls') {
        pop_cmd($fp, 'STLS');
        starttls($fp);
    }
    pop_cmd($fp, "USER $user");
    pop_cmd($fp, "PASS $password");
    pop_cmd($fp, 'STAT');
    $stat = pop_cmd($fp, 'STAT');
    $count = (int) explode(' ', $stat)[1];
    for ($n = 1; $n <= $count; $n++) {
        pop_cmd($fp, "TOP $n 0", true);
        pop_cmd($fp, "UIDL $n");
        $msg = pop_cmd($fp, "RETR $n", true);
        echo "=== message $n\n$msg\n";
    }
    pop_cmd($fp, 'QUIT');
    echo "RESULT ok\n";
}

match ($proto) {
    'imap' => imap($tls, $fp, $user, $password),
    'pop3' => pop3($tls, $fp, $user, $password),
};
exit(0);
