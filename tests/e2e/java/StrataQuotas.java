// Java kafka-clients driver for tests/e2e/test_quotas.py (client quotas through the Admin API).
// Compiled with javac at test time against tests/e2e/.deps/java/*.jar (3.9.1).
//
//   java StrataQuotas <bootstrap>
//
// One Admin client, in order:
//   1. alterClientQuotas: (user=jalice, client-id=japp) producer_byte_rate=4096 and
//      consumer_byte_rate=8192; the default client-id request_percentage=12.5; ip 127.0.0.1
//      connection_creation_rate=20;
//   2. describeClientQuotas with ClientQuotaFilter.all() ("all", polled until the three entities
//      are there), contains(user=jalice)
//      ("user_jalice"), containsOnly(default client-id) ("default_client"), contains(any ip)
//      ("any_ip");
//   3. invalid alterations, each alone: a fractional producer_byte_rate, a user key on an ip
//      entity, value 0; each future's failure (cause chain class names, message) is reported;
//   4. consumer_byte_rate of (jalice, japp) removed (Op with a null value), then all() again
//      ("after_remove", polled until the key is gone).
// Prints one line "RESULT {json}" on stdout; an entity is a JSON object {type: name|null}.
import java.util.*;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.common.quota.ClientQuotaAlteration;
import org.apache.kafka.common.quota.ClientQuotaEntity;
import org.apache.kafka.common.quota.ClientQuotaFilter;
import org.apache.kafka.common.quota.ClientQuotaFilterComponent;

public class StrataQuotas {
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

    static ClientQuotaEntity entity(String... typeName) {
        Map<String, String> m = new HashMap<>();  // a null name is the default entity
        for (int i = 0; i < typeName.length; i += 2) m.put(typeName[i], typeName[i + 1]);
        return new ClientQuotaEntity(m);
    }

    static ClientQuotaAlteration alter(ClientQuotaEntity e, Object... keyValue) {
        List<ClientQuotaAlteration.Op> ops = new ArrayList<>();
        for (int i = 0; i < keyValue.length; i += 2) ops.add(new ClientQuotaAlteration.Op((String) keyValue[i],
                (Double) keyValue[i + 1]));
        return new ClientQuotaAlteration(e, ops);
    }

    static String json(Map<ClientQuotaEntity, Map<String, Double>> described) {
        StringBuilder sb = new StringBuilder("[");
        for (Map.Entry<ClientQuotaEntity, Map<String, Double>> e : described.entrySet()) {
            if (sb.length() > 1) sb.append(',');
            sb.append("{\"entity\":{");
            boolean first = true;
            for (Map.Entry<String, String> part : new TreeMap<>(e.getKey().entries()).entrySet()) {
                if (!first) sb.append(',');
                first = false;
                sb.append(q(part.getKey())).append(':').append(q(part.getValue()));
            }
            sb.append("},\"values\":{");
            first = true;
            for (Map.Entry<String, Double> v : new TreeMap<>(e.getValue()).entrySet()) {
                if (!first) sb.append(',');
                first = false;
                sb.append(q(v.getKey())).append(':').append(v.getValue());
            }
            sb.append("}}");
        }
        return sb.append(']').toString();
    }

    static String failure(Admin admin, ClientQuotaAlteration a) {
        try {
            admin.alterClientQuotas(List.of(a)).all().get(30, TimeUnit.SECONDS);
            return "{\"errors\":[],\"message\":null}";
        } catch (Exception e) {
            List<String> chain = new ArrayList<>();
            String message = null;
            for (Throwable t = e; t != null; t = t.getCause()) {
                chain.add(q(t.getClass().getName()));
                message = t.getMessage();
            }
            return "{\"errors\":" + chain + ",\"message\":" + q(message) + "}";
        }
    }

    /** describeClientQuotas(all()) until `done` holds (at most 10 s); the last answer. */
    static Map<ClientQuotaEntity, Map<String, Double>> describeUntil(
            Admin admin, java.util.function.Predicate<Map<ClientQuotaEntity, Map<String, Double>>> done)
            throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (true) {
            Map<ClientQuotaEntity, Map<String, Double>> m =
                admin.describeClientQuotas(ClientQuotaFilter.all()).entities().get(30, TimeUnit.SECONDS);
            if (done.test(m) || System.nanoTime() > deadline) return m;
            Thread.sleep(50);
        }
    }

    public static void main(String[] args) throws Exception {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, 15000);
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, 30000);
        StringBuilder out = new StringBuilder("{");
        try (Admin admin = Admin.create(p)) {
            ClientQuotaEntity app = entity("user", "jalice", "client-id", "japp");
            admin.alterClientQuotas(List.of(
                    alter(app, "producer_byte_rate", 4096.0, "consumer_byte_rate", 8192.0),
                    alter(entity("client-id", null), "request_percentage", 12.5),
                    alter(entity("ip", "127.0.0.1"), "connection_creation_rate", 20.0)))
                .all().get(30, TimeUnit.SECONDS);
            // The alteration is committed by the controller; the broker's image may follow a moment later.
            out.append("\"all\":").append(json(describeUntil(admin, m -> m.size() == 3)));
            out.append(",\"user_jalice\":").append(json(admin.describeClientQuotas(ClientQuotaFilter.contains(
                List.of(ClientQuotaFilterComponent.ofEntity("user", "jalice")))).entities().get(30, TimeUnit.SECONDS)));
            out.append(",\"default_client\":").append(json(admin.describeClientQuotas(ClientQuotaFilter.containsOnly(
                List.of(ClientQuotaFilterComponent.ofDefaultEntity("client-id")))).entities().get(30, TimeUnit.SECONDS)));
            out.append(",\"any_ip\":").append(json(admin.describeClientQuotas(ClientQuotaFilter.contains(
                List.of(ClientQuotaFilterComponent.ofEntityType("ip")))).entities().get(30, TimeUnit.SECONDS)));
            out.append(",\"invalid\":{");
            out.append("\"fractional\":").append(failure(admin, alter(app, "producer_byte_rate", 1.5)));
            out.append(",\"ip_user_key\":").append(failure(admin,
                alter(entity("ip", "127.0.0.1"), "producer_byte_rate", 1024.0)));
            out.append(",\"zero\":").append(failure(admin, alter(app, "consumer_byte_rate", 0.0)));
            out.append("}");
            admin.alterClientQuotas(List.of(alter(app, "consumer_byte_rate", null))).all().get(30, TimeUnit.SECONDS);
            out.append(",\"after_remove\":").append(json(describeUntil(admin,
                m -> !m.getOrDefault(app, Map.of()).containsKey("consumer_byte_rate"))));
        }
        System.out.println("RESULT " + out.append('}'));
        System.out.flush();
        System.exit(0);
    }
}
