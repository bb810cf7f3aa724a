package dev.caudal.it.tools;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.caudal.it.CaudalBroker;
import dev.caudal.it.WithBroker;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * The pair Kafka's own system tests check delivery with: VerifiableProducer's acknowledged
 * (partition, offset) set must equal what VerifiableConsumer, in a group, reads back. Each
 * runs in a JVM of its own, as in Kafka's system tests (their JSON goes to stdout).
 */
@Timeout(value = 300, unit = TimeUnit.SECONDS)
class VerifiableDeliveryTest extends WithBroker {
    static final Pattern PART = Pattern.compile("\"partition\":(\\d+)");
    static final Pattern OFF = Pattern.compile("\"offset\":(\\d+)");



    /** Runs a tool's main class in a child JVM; returns its stdout lines. */
    static List<String> runJvm(Path dir, String name, String mainClass, String... args) throws Exception {
        String cp = System.getProperty("surefire.test.class.path", System.getProperty("java.class.path"));
        List<String> cmd = new ArrayList<>(List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
            "-Xmx256M", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-cp", cp, mainClass));
        cmd.addAll(List.of(args));
        Path out = dir.resolve(name + ".out");
        Path err = dir.resolve(name + ".err");
        Process p = new ProcessBuilder(cmd).redirectOutput(out.toFile()).redirectError(err.toFile()).start();
        if (!p.waitFor(180, TimeUnit.SECONDS)) {
            p.destroyForcibly().waitFor(10, TimeUnit.SECONDS);
            throw new AssertionError(name + " did not finish in 180 s:\n" + Files.readString(err));
        }
        assertEquals(0, p.exitValue(), name + " failed:\n" + Files.readString(err));
        return Files.readAllLines(out);
    }

    static String pairOf(String line) {
        Matcher p = PART.matcher(line);
        Matcher o = OFF.matcher(line);
        assertTrue(p.find() && o.find(), "no partition/offset in " + line);
        return p.group(1) + "@" + o.group(1);
    }

    @Test
    void everyAcknowledgedRecordIsConsumedAndNothingElse() throws Exception {
        String t = CaudalBroker.topic("verifiable");
        int n = 5000;
        Path dir = Files.createTempDirectory("verifiable-");
        List<String> produced = runJvm(dir, "producer", "org.apache.kafka.tools.VerifiableProducer",
            "--bootstrap-server", broker.bootstrap(), "--topic", t, "--max-messages", String.valueOf(n),
            "--acks", "-1");
        Set<String> acked = new HashSet<>();
        int errors = 0;
        for (String l : produced) {
            if (l.contains("\"name\":\"producer_send_success\"")) {
                acked.add(pairOf(l));
            } else if (l.contains("\"name\":\"producer_send_error\"")) {
                errors++;
            }
        }
        assertEquals(0, errors, "send errors:\n" + String.join("\n", produced.subList(0, Math.min(20, produced.size()))));
        assertEquals(n, acked.size(), "acknowledged records");

        List<String> consumed = runJvm(dir, "consumer", "org.apache.kafka.tools.VerifiableConsumer",
            "--bootstrap-server", broker.bootstrap(), "--topic", t, "--group-id", CaudalBroker.topic("vg"),
            "--max-messages", String.valueOf(n), "--verbose");
        Set<String> read = new HashSet<>();
        boolean committed = false;
        for (String l : consumed) {
            if (l.contains("\"name\":\"record_data\"")) {
                read.add(pairOf(l));
            } else if (l.contains("\"name\":\"offsets_committed\"") && l.contains("\"success\":true")) {
                committed = true;
            }
        }
        assertEquals(acked, read, "the consumed set equals the acknowledged set");
        assertTrue(committed, "the consumer committed its offsets");
    }
}
