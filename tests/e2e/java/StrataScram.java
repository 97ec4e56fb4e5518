// Java kafka-clients driver for tests/e2e/test_scram.py (SASL/SCRAM), compiled with javac at test
// time against tests/e2e/.deps/java (3.9.1) or tests/e2e/.deps/java4 (4.1.1).
//
//   java StrataScram <admin.properties> <user.properties> <user> <password> <topic> <count>
//
// <admin.properties>: bootstrap.servers and the security settings of a user the broker knows
// (ScramLoginModule, SCRAM-SHA-512). <user.properties>: the same for <user>, who does not exist
// yet (its sasl.mechanism is the one it logs in with). Steps, each recorded in the JSON:
//   admin             Admin as the known user: describeCluster, createTopics(<topic>, 1 partition)
//   describe-known    describeUserScramCredentials() of all users (the formatted ones)
//   upsert            alterUserScramCredentials: <user> SCRAM-SHA-256 4096 iterations, then in a
//                     second request SCRAM-SHA-512 8192 (one user per request, as Kafka wants)
//   describe          describeUserScramCredentials([<user>]): its mechanisms and iterations
//   produce           an acks=all producer logged in as <user> sends <count> records
//   delete            alterUserScramCredentials deletions of both mechanisms (two requests)
//   delete-unknown    deleting its SCRAM-SHA-256 credential again must fail (ResourceNotFoundException)
//   describe-deleted  describeUserScramCredentials([<user>]) must fail (ResourceNotFoundException)
//   login-deleted     an Admin logged in as <user> must fail (SaslAuthenticationException)
// Prints one line "RESULT {json}" on stdout; on an unexpected exception {"ok":false,"step":...,
// "errors":[class names of the cause chain],"message":...}.
import java.io.FileReader;
import java.nio.charset.StandardCharsets;
import java.util.*;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.KafkaFuture;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class StrataScram {
    static String q(String s) {
        if (s == null) return "null";
        StringBuilder sb = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') sb.append('\\').append(c);
            else if (c < 0x20) sb.append(String.format("\\u%04x", (int) c));
            else sb.append(c);
        }
        return sb.append('"').toString();
    }

    static String step = "start";

    static Properties load(String path) throws Exception {
        Properties p = new Properties();
        try (FileReader r = new FileReader(path, StandardCharsets.UTF_8)) { p.load(r); }
        return p;
    }

    static Properties with(Properties base, Object... kv) {
        Properties p = new Properties();
        p.putAll(base);
        for (int i = 0; i < kv.length; i += 2) p.put(kv[i], kv[i + 1]);
        return p;
    }

    static List<String> chain(Throwable e) {
        List<String> out = new ArrayList<>();
        for (Throwable c = e; c != null && out.size() < 8; c = c.getCause()) out.add(c.getClass().getName());
        return out;
    }

    static String lastMessage(Throwable e) {
        String m = null;
        for (Throwable c = e; c != null; c = c.getCause()) if (c.getMessage() != null) m = c.getMessage();
        return m;
    }

    static String list(List<String> xs) {
        StringBuilder sb = new StringBuilder("[");
        for (int i = 0; i < xs.size(); i++) sb.append(i > 0 ? "," : "").append(q(xs.get(i)));
        return sb.append(']').toString();
    }

    // the exception a future ends with: {"errors":[cause chain],"message":...}, or "null" if it succeeded
    static String failure(KafkaFuture<?> f) throws InterruptedException {
        try {
            f.get(20, TimeUnit.SECONDS);
            return "null";
        } catch (ExecutionException | java.util.concurrent.TimeoutException e) {
            Throwable c = e instanceof ExecutionException ? e.getCause() : e;
            return "{\"errors\":" + list(chain(c)) + ",\"message\":" + q(lastMessage(c)) + "}";
        }
    }

    static String describe(UserScramCredentialsDescription d) {
        List<String> infos = new ArrayList<>();
        for (ScramCredentialInfo i : d.credentialInfos()) infos.add(i.mechanism().mechanismName() + ":" + i.iterations());
        Collections.sort(infos);
        return list(infos);
    }

    public static void main(String[] args) throws Exception {
        long t0 = System.nanoTime();
        StringBuilder out = new StringBuilder("{");
        try {
            run(load(args[0]), load(args[1]), args[2], args[3], args[4], Integer.parseInt(args[5]), out);
            out.append(",\"ok\":true");
        } catch (Throwable e) {
            if (out.length() > 1) out.append(',');
            out.append("\"ok\":false,\"step\":").append(q(step)).append(",\"errors\":").append(list(chain(e)))
               .append(",\"message\":").append(q(lastMessage(e)));
            e.printStackTrace();
        }
        out.append(",\"elapsed_ms\":").append((System.nanoTime() - t0) / 1_000_000).append('}');
        System.out.println("RESULT " + out);
        System.out.flush();
        System.exit(0);
    }

    static void run(Properties adminProps, Properties userProps, String user, String password, String topic,
                    int count, StringBuilder out) throws Exception {
        Properties adminConf = with(adminProps, AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, 15000,
            AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, 20000);
        try (Admin admin = Admin.create(adminConf)) {
            step = "admin";
            Collection<Node> nodes = admin.describeCluster().nodes().get(20, TimeUnit.SECONDS);
            List<String> ns = new ArrayList<>();
            for (Node n : nodes) ns.add(n.id() + "@" + n.host() + ":" + n.port());
            out.append("\"nodes\":").append(list(ns));
            admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1))).all().get(20, TimeUnit.SECONDS);

            step = "describe-known";
            Map<String, UserScramCredentialsDescription> all =
                admin.describeUserScramCredentials().all().get(20, TimeUnit.SECONDS);
            out.append(",\"known\":{");
            int i = 0;
            for (String u : new TreeSet<>(all.keySet()))
                out.append(i++ > 0 ? "," : "").append(q(u)).append(':').append(describe(all.get(u)));
            out.append('}');

            step = "upsert";
            admin.alterUserScramCredentials(List.of(new UserScramCredentialUpsertion(user,
                new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096), password))).all().get(20, TimeUnit.SECONDS);
            admin.alterUserScramCredentials(List.of(new UserScramCredentialUpsertion(user,
                new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), password))).all().get(20, TimeUnit.SECONDS);

            step = "describe";
            UserScramCredentialsDescription d = admin.describeUserScramCredentials(List.of(user))
                .description(user).get(20, TimeUnit.SECONDS);
            out.append(",\"described\":").append(describe(d));

            step = "produce";
            int produced = 0;
            try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(with(userProps, "acks", "all",
                    "delivery.timeout.ms", 30000, "request.timeout.ms", 15000, "max.block.ms", 20000),
                    new ByteArraySerializer(), new ByteArraySerializer())) {
                List<java.util.concurrent.Future<RecordMetadata>> fs = new ArrayList<>();
                for (int k = 0; k < count; k++)
                    fs.add(producer.send(new ProducerRecord<>(topic, 0, ("k" + k).getBytes(StandardCharsets.UTF_8),
                        (user + "-" + k).getBytes(StandardCharsets.UTF_8))));
                producer.flush();
                for (var f : fs) { f.get(30, TimeUnit.SECONDS); produced++; }
            }
            out.append(",\"produced\":").append(produced);

            step = "delete";
            for (ScramMechanism m : List.of(ScramMechanism.SCRAM_SHA_256, ScramMechanism.SCRAM_SHA_512))
                admin.alterUserScramCredentials(List.of(new UserScramCredentialDeletion(user, m)))
                    .all().get(20, TimeUnit.SECONDS);

            step = "delete-unknown";
            out.append(",\"delete_unknown\":").append(failure(admin.alterUserScramCredentials(
                List.of(new UserScramCredentialDeletion(user, ScramMechanism.SCRAM_SHA_256))).values().get(user)));

            step = "describe-deleted";
            out.append(",\"describe_deleted\":").append(failure(
                admin.describeUserScramCredentials(List.of(user)).description(user)));
        }

        step = "login-deleted";
        long t1 = System.nanoTime();
        try (Admin gone = Admin.create(with(userProps, AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, 10000,
                AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, 15000))) {
            out.append(",\"login_deleted\":").append(failure(gone.describeCluster().nodes()));
        }
        out.append(",\"login_deleted_ms\":").append((System.nanoTime() - t1) / 1_000_000);
        step = "done";
    }
}
