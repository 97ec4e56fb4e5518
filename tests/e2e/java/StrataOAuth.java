// Java kafka-clients driver for tests/e2e/test_oauth.py (SASL/OAUTHBEARER).
// Compiled with javac at test time against tests/e2e/.deps/java/*.jar (3.9.1), run once per
// JVM against several kafka-clients versions: each classpath argument gets its own class loader
// (parent: the platform loader), so 3.9.1 and 4.1.1 run one after the other in one JVM start
// (the SASL security providers a version registers are removed before the next one runs).
//
//   java -cp <classes> StrataOAuth <bootstrap> <good-token-file> <bad-token-file> <topic-prefix> <count> <classpath>...
//
// The clients log in with OAuthBearerLoginModule and a login callback handler of this file
// (StrataOAuthClient$TokenFile) that hands Kafka the JWT in the file named by the JAAS option
// tokenFile. (Kafka's own OAuthBearerLoginCallbackHandler with
// sasl.oauthbearer.token.endpoint.url=file:... needs jackson-databind, which the test's jar sets
// do not have: 3.9.1 fails with NoClassDefFoundError com.fasterxml.jackson.databind.ObjectMapper,
// and 4.1.1 first refuses the file URL unless the JVM property
// org.apache.kafka.sasl.oauthbearer.allowed.urls allows it, then fails the same way.)
//
// Per client version (topic <topic-prefix>-<n>, n = 1, 2, ...): Admin describeCluster +
// createTopics (2 partitions), an acks=all producer sends <count> keyed records to partition
// i % 2, an assign() consumer reads them back and checks each; then an Admin with the bad
// token must fail describeCluster with SaslAuthenticationException.
// Prints one line per version, "RESULT {json}": {"version":..., "ok":true, "nodes":[...],
// "produced":n, "consumed":n, "mismatches":[...], "refused":{"errors":[...],"message":...}} or
// {"ok":false, "step":..., "errors":[...], "message":...}.
import java.io.File;
import java.net.URL;
import java.net.URLClassLoader;
import java.util.ArrayList;
import java.util.List;

public class StrataOAuth {
    public static void main(String[] args) throws Exception {
        String[] fixed = java.util.Arrays.copyOfRange(args, 0, 5);
        for (int n = 5; n < args.length; n++) {
            List<URL> urls = new ArrayList<>();
            for (String p : args[n].split(":")) urls.add(new File(p).toURI().toURL());
            ClassLoader loader = new URLClassLoader(urls.toArray(new URL[0]), ClassLoader.getPlatformClassLoader());
            ClassLoader before = Thread.currentThread().getContextClassLoader();
            // JAAS loads the login module, Kafka its configured classes, through this loader
            Thread.currentThread().setContextClassLoader(loader);
            String[] runArgs = fixed.clone();
            runArgs[3] = fixed[3] + "-" + (n - 4);
            try {
                Class<?> c = Class.forName("StrataOAuthClient", true, loader);
                var run = c.getMethod("run", String[].class);
                run.setAccessible(true);  // StrataOAuthClient is package-private, in another loader's package
                String result = (String) run.invoke(null, (Object) runArgs);
                System.out.println("RESULT " + result);
            } finally {
                Thread.currentThread().setContextClassLoader(before);
                // kafka-clients registers its SASL client factories as JVM-wide security providers
                // (by name, first one wins): drop this version's, or the next would use them
                for (java.security.Provider p : java.security.Security.getProviders())
                    if (p.getClass().getClassLoader() == loader) java.security.Security.removeProvider(p.getName());
            }
            System.out.flush();
        }
        System.exit(0);
    }
}

class StrataOAuthClient {
    static final int PARTS = 2;
    static final String MODULE = "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule";

    /** The login callback handler: the JWT in the file of the JAAS option tokenFile. */
    public static class TokenFile implements org.apache.kafka.common.security.auth.AuthenticateCallbackHandler {
        private String path;

        @Override
        public void configure(java.util.Map<String, ?> configs, String mechanism,
                              List<javax.security.auth.login.AppConfigurationEntry> jaas) {
            for (var e : jaas) {
                Object p = e.getOptions().get("tokenFile");
                if (p != null) path = p.toString();
            }
            if (path == null) throw new IllegalArgumentException("JAAS option tokenFile missing");
        }

        @Override
        public void handle(javax.security.auth.callback.Callback[] callbacks)
                throws java.io.IOException, javax.security.auth.callback.UnsupportedCallbackException {
            for (var cb : callbacks) {
                if (cb instanceof org.apache.kafka.common.security.oauthbearer.OAuthBearerTokenCallback) {
                    String jwt = java.nio.file.Files.readString(java.nio.file.Path.of(path)).trim();
                    ((org.apache.kafka.common.security.oauthbearer.OAuthBearerTokenCallback) cb).token(new Jwt(jwt));
                } else {
                    throw new javax.security.auth.callback.UnsupportedCallbackException(cb);
                }
            }
        }

        @Override
        public void close() {}
    }

    /** A JWT as OAuthBearerToken: exp and sub read from its payload (no verification: the broker's job). */
    static class Jwt implements org.apache.kafka.common.security.oauthbearer.OAuthBearerToken {
        final String value, sub;
        final long expMs, iatMs;

        Jwt(String value) {
            this.value = value;
            String[] parts = value.split("\\.");
            String payload = parts.length > 1
                ? new String(java.util.Base64.getUrlDecoder().decode(parts[1]), java.nio.charset.StandardCharsets.UTF_8)
                : "{}";
            this.sub = field(payload, "\"sub\"\\s*:\\s*\"([^\"]*)\"", "unknown");
            // a token without exp (the garbage one) gets an hour: the broker decides
            this.expMs = Long.parseLong(field(payload, "\"exp\"\\s*:\\s*(\\d+)",
                String.valueOf(System.currentTimeMillis() / 1000 + 3600))) * 1000;
            this.iatMs = Long.parseLong(field(payload, "\"iat\"\\s*:\\s*(\\d+)",
                String.valueOf(System.currentTimeMillis() / 1000))) * 1000;
        }

        static String field(String json, String regex, String dflt) {
            var m = java.util.regex.Pattern.compile(regex).matcher(json);
            return m.find() ? m.group(1) : dflt;
        }

        public String value() { return value; }
        public java.util.Set<String> scope() { return java.util.Set.of("kafka"); }
        public long lifetimeMs() { return expMs; }
        public String principalName() { return sub; }
        public Long startTimeMs() { return iatMs; }
    }

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

    static byte[] b(String s) { return s.getBytes(java.nio.charset.StandardCharsets.UTF_8); }

    static java.util.Properties props(String bootstrap, String tokenFile, Object... kv) {
        java.util.Properties p = new java.util.Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("security.protocol", "SASL_PLAINTEXT");
        p.put("sasl.mechanism", "OAUTHBEARER");
        p.put("sasl.jaas.config", MODULE + " required tokenFile=\"" + tokenFile + "\";");
        p.put("sasl.login.callback.handler.class", TokenFile.class.getName());
        for (int i = 0; i < kv.length; i += 2) p.put(kv[i], kv[i + 1]);
        return p;
    }

    static String errors(Throwable e) {
        List<String> chain = new ArrayList<>();
        String message = null;
        for (Throwable c = e; c != null && chain.size() < 8; c = c.getCause()) {
            chain.add(q(c.getClass().getName()));
            if (c.getMessage() != null) message = c.getMessage();  // the innermost cause's
        }
        return "\"errors\":[" + String.join(",", chain) + "],\"message\":" + q(message);
    }

    static String step = "start";

    public static String run(String[] args) {
        String bootstrap = args[0], good = args[1], bad = args[2], topic = args[3];
        int count = Integer.parseInt(args[4]);
        long t0 = System.nanoTime();
        StringBuilder out = new StringBuilder("{\"version\":" + q(org.apache.kafka.common.utils.AppInfoParser.getVersion()));
        try {
            scenario(bootstrap, good, bad, topic, count, out);
            out.append(",\"ok\":true");
        } catch (Throwable e) {
            out.append(",\"ok\":false,\"step\":").append(q(step)).append(',').append(errors(e));
            e.printStackTrace();
        }
        return out.append(",\"elapsed_ms\":").append((System.nanoTime() - t0) / 1_000_000).append('}').toString();
    }

    static void scenario(String bootstrap, String good, String bad, String topic, int count, StringBuilder out)
            throws Exception {
        step = "admin";
        try (var admin = org.apache.kafka.clients.admin.Admin.create(props(bootstrap, good,
                "request.timeout.ms", 15000, "default.api.timeout.ms", 20000))) {
            var nodes = admin.describeCluster().nodes().get(20, java.util.concurrent.TimeUnit.SECONDS);
            out.append(",\"nodes\":[");
            int i = 0;
            for (var n : nodes) out.append(i++ > 0 ? "," : "").append(q(n.id() + "@" + n.host() + ":" + n.port()));
            out.append(']');
            step = "createTopics";
            admin.createTopics(List.of(new org.apache.kafka.clients.admin.NewTopic(topic, PARTS, (short) 1)))
                .all().get(20, java.util.concurrent.TimeUnit.SECONDS);
            long deadline = System.currentTimeMillis() + 20000;
            while (true) {
                try {
                    var td = admin.describeTopics(List.of(topic)).allTopicNames()
                        .get(20, java.util.concurrent.TimeUnit.SECONDS).get(topic);
                    if (td.partitions().size() == PARTS && td.partitions().stream().allMatch(p -> p.leader() != null))
                        break;
                } catch (java.util.concurrent.ExecutionException e) {
                    if (System.currentTimeMillis() > deadline) throw e;
                }
                if (System.currentTimeMillis() > deadline) throw new IllegalStateException("topic not ready");
                Thread.sleep(100);
            }
        }
        step = "produce";
        int produced = 0;
        try (var producer = new org.apache.kafka.clients.producer.KafkaProducer<byte[], byte[]>(
                props(bootstrap, good, "acks", "all", "linger.ms", 5, "delivery.timeout.ms", 30000,
                    "request.timeout.ms", 15000, "max.block.ms", 20000),
                new org.apache.kafka.common.serialization.ByteArraySerializer(),
                new org.apache.kafka.common.serialization.ByteArraySerializer())) {
            List<java.util.concurrent.Future<org.apache.kafka.clients.producer.RecordMetadata>> fs = new ArrayList<>();
            for (int i = 0; i < count; i++)
                fs.add(producer.send(new org.apache.kafka.clients.producer.ProducerRecord<>(
                    topic, i % PARTS, b("k" + i), b("java-oauth-" + i))));
            producer.flush();
            for (var f : fs) { f.get(30, java.util.concurrent.TimeUnit.SECONDS); produced++; }
        }
        out.append(",\"produced\":").append(produced);
        step = "consume";
        List<String> mismatches = new ArrayList<>();
        int consumed = 0;
        try (var consumer = new org.apache.kafka.clients.consumer.KafkaConsumer<byte[], byte[]>(
                props(bootstrap, good, "enable.auto.commit", "false", "auto.offset.reset", "earliest",
                    "request.timeout.ms", 15000, "default.api.timeout.ms", 20000),
                new org.apache.kafka.common.serialization.ByteArrayDeserializer(),
                new org.apache.kafka.common.serialization.ByteArrayDeserializer())) {
            List<org.apache.kafka.common.TopicPartition> tps = new ArrayList<>();
            for (int p = 0; p < PARTS; p++) tps.add(new org.apache.kafka.common.TopicPartition(topic, p));
            consumer.assign(tps);
            consumer.seekToBeginning(tps);
            long[] next = new long[PARTS];
            long deadline = System.currentTimeMillis() + 30000;
            while (consumed < count && System.currentTimeMillis() < deadline) {
                for (var r : consumer.poll(java.time.Duration.ofMillis(500))) {
                    int p = r.partition();
                    int i = (int) (r.offset() * PARTS + p);
                    String k = new String(r.key(), java.nio.charset.StandardCharsets.UTF_8);
                    String v = new String(r.value(), java.nio.charset.StandardCharsets.UTF_8);
                    if (r.offset() != next[p] || !k.equals("k" + i) || !v.equals("java-oauth-" + i))
                        if (mismatches.size() < 10) mismatches.add("p" + p + "@" + r.offset() + " " + k + "=" + v);
                    next[p] = r.offset() + 1;
                    consumed++;
                }
            }
        }
        out.append(",\"consumed\":").append(consumed).append(",\"mismatches\":[");
        for (int i = 0; i < mismatches.size(); i++) out.append(i > 0 ? "," : "").append(q(mismatches.get(i)));
        out.append(']');
        step = "refused";
        long t = System.nanoTime();
        try (var admin = org.apache.kafka.clients.admin.Admin.create(props(bootstrap, bad,
                "request.timeout.ms", 10000, "default.api.timeout.ms", 15000))) {
            admin.describeCluster().nodes().get(20, java.util.concurrent.TimeUnit.SECONDS);
            out.append(",\"refused\":null");
        } catch (java.util.concurrent.ExecutionException e) {
            out.append(",\"refused\":{").append(errors(e)).append(",\"ms\":")
                .append((System.nanoTime() - t) / 1_000_000).append('}');
        }
        step = "done";
    }
}
