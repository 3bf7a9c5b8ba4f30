<?php
// Symfony Mailer (Debian php-symfony-mailer) configured as GLPI 11's GLPIMailer does: a DSN
// smtp://rawurlencode(user):rawurlencode(password)@host:port, "?verify_peer=0" when "check
// certificate" is off, a 10 s stream timeout. Symfony upgrades with STARTTLS whenever the
// server advertises it.
//   php symfony.php HOST PORT USER PASSWORD FROM TO SUBJECT BODY [verify_peer=0]
// Prints "RESULT ok" (exit 0) or "RESULT refused <message>" (exit 3); the debug log to stderr.
require '/usr/share/php/Symfony/Component/Mailer/autoload.php';

use Symfony\Component\Mailer\Exception\TransportExceptionInterface;
use Symfony\Component\Mailer\Transport;
use Symfony\Component\Mime\Email;

[, $host, $port, $user, $password, $from, $to, $subject, $body] = $argv;
$query = $argv[9] ?? '';

$dsn = sprintf('smtp://%s:%s@%s:%s', rawurlencode($user), rawurlencode($password), $host, $port);
if ($query !== '') {
    $dsn .= '?' . $query;
}
$transport = Transport::fromDsn($dsn);
if (method_exists($transport, 'getStream')) {
    $transport->getStream()->setTimeout(10);
}
$email = (new Email())->from($from)->to($to)->subject($subject)->text($body);

try {
    $sent = $transport->send($email);
    fwrite(STDERR, $sent->getDebug());
    echo "RESULT ok\n";
    exit(0);
} catch (TransportExceptionInterface $e) {
    fwrite(STDERR, $e->getDebug());
    echo 'RESULT refused ' . str_replace("\n", ' ', $e->getMessage()) . "\n";
    exit(3);
}
