package dev.caudal.it;

import java.io.IOException;
import java.net.ServerSocket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Properties;
import java.util.UUID;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

/**
 * A Caudal broker process on free loopback ports with its data in a temporary directory
 * under the repository's target/tmp (O_DIRECT refuses tmpfs); stopped by {@link #close}.
 * The binary is $CAUDAL_BIN, else target/debug/caudal.
 */
public final class CaudalBroker implements AutoCloseable {
    private static final int SHARDS = 2;
    private final Process process;
    private final Path dir;
    private final Path log;
    private final int port;

    private CaudalBroker(Process process, Path dir, Path log, int port) {
        this.process = process;
        this.dir = dir;
        this.log = log;
        this.port = port;
    }

    /** Starts a broker with two shards; extra arguments go to its command line. */
    public static CaudalBroker start(String... extra) throws Exception {
        Path repo = repo();
        String bin = System.getenv().getOrDefault("CAUDAL_BIN", repo.resolve("target/debug/caudal").toString());
        Path tmp = repo.resolve("target/tmp");
        Files.createDirectories(tmp);
        Exception last = null;
        for (int attempt = 0; attempt < 5; attempt++) {
            Path dir = Files.createTempDirectory(tmp, "java-it-");
            int port = freePorts(SHARDS);
            List<String> cmd = new ArrayList<>(List.of(bin, "--data-dir", dir.toString(),
                "--listen", "127.0.0.1:" + port, "--shards", String.valueOf(SHARDS),
                "--group-initial-rebalance-delay-ms", "0"));
            cmd.addAll(List.of(extra));
            Path log = dir.resolve("broker.log");
            Process p = new ProcessBuilder(cmd).redirectErrorStream(true)
                .redirectOutput(log.toFile()).start();
            CaudalBroker b = new CaudalBroker(p, dir.resolve("data"), log, port);
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
            while (System.nanoTime() < deadline) {
                String text = Files.readString(log);
                if (text.contains("caudal ready")) {
                    return b;
                }
                if (!p.isAlive()) {
                    break;
                }
                Thread.sleep(50);
            }
            String text = Files.readString(log);
            b.close();
            last = new IllegalStateException("caudal did not start (" + cmd + "):\n" + text);
            if (!text.contains("in use")) {
                break;
            }
        }
        throw last;
    }

    /** The bootstrap address (shard 0). */
    public String bootstrap() {
        return "127.0.0.1:" + port;
    }

    /** Client properties with the bootstrap address. */
    public Properties props() {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap());
        return p;
    }

    /** What the broker printed so far, for failure messages. */
    public String log() {
        try {
            return Files.readString(log);
        } catch (IOException e) {
            return "(no log: " + e + ")";
        }
    }

    /** A topic name no other test uses. */
    public static String topic(String what) {
        return what + "-" + UUID.randomUUID().toString().substring(0, 8);
    }

    @Override
    public void close() throws Exception {
        process.destroy();
        if (!process.waitFor(15, TimeUnit.SECONDS)) {
            process.destroyForcibly().waitFor(10, TimeUnit.SECONDS);
        }
        Path root = log.getParent();
        try (Stream<Path> s = Files.walk(root)) {
            s.sorted(Comparator.reverseOrder()).forEach(x -> x.toFile().delete());
        }
    }

    static Path repo() {
        String fromEnv = System.getenv("CAUDAL_REPO");
        if (fromEnv != null) {
            return Paths.get(fromEnv);
        }
        // tests/java is the working directory under Maven.
        return Paths.get("").toAbsolutePath().getParent().getParent();
    }

    /** A port P with P..P+n-1 free on 127.0.0.1 now. */
    static int freePorts(int n) throws IOException {
        for (int attempt = 0; attempt < 100; attempt++) {
            int p;
            try (ServerSocket s = new ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress())) {
                p = s.getLocalPort();
            }
            boolean ok = p + n < 65536;
            for (int k = 1; k < n && ok; k++) {
                try (ServerSocket t = new ServerSocket(p + k, 1, java.net.InetAddress.getLoopbackAddress())) {
                    // free
                } catch (IOException e) {
                    ok = false;
                }
            }
            if (ok) {
                return p;
            }
        }
        throw new IOException("no " + n + " consecutive free ports");
    }
}
