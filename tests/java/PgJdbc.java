// Quiver's PostgreSQL port through PostgreSQL's own JDBC driver (Debian's
// libpostgresql-jdbc-java), the way DBeaver, Tableau and other JDBC tools use it:
// metadata first (getTables, getColumns), then a prepared statement with ? parameters.
//
// Usage: java -cp /usr/share/java/postgresql.jar:. PgJdbc JDBC_URL USER PASSWORD
// Prints "JDBC OK" and exits 0 when every check holds.
import java.sql.*;
import java.util.*;

public class PgJdbc {
    static void check(boolean ok, String what) {
        if (!ok) {
            System.err.println("JDBC FAILED: " + what);
            System.exit(1);
        }
    }

    public static void main(String[] args) throws Exception {
        try (Connection conn = DriverManager.getConnection(args[0], args[1], args[2])) {
            DatabaseMetaData md = conn.getMetaData();
            System.out.println("-- server " + md.getDatabaseProductName() + " " + md.getDatabaseProductVersion());
            List<String> tables = new ArrayList<>();
            try (ResultSet rs = md.getTables(null, "tpch", "%", new String[] {"TABLE"})) {
                while (rs.next()) tables.add(rs.getString("TABLE_NAME"));
            }
            System.out.println("-- tables " + tables);
            check(tables.contains("lineitem") && tables.contains("nation"), "getTables lists " + tables);
            List<String> columns = new ArrayList<>();
            try (ResultSet rs = md.getColumns(null, "tpch", "lineitem", "%")) {
                while (rs.next()) columns.add(rs.getString("COLUMN_NAME") + ":" + rs.getString("TYPE_NAME"));
            }
            System.out.println("-- lineitem columns " + columns);
            check(columns.size() == 16 && columns.get(0).startsWith("l_orderkey:"), "getColumns gives " + columns);

            long literal;
            try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery("SELECT count(*) FROM lineitem WHERE l_quantity < 10")) {
                rs.next();
                literal = rs.getLong(1);
            }
            try (PreparedStatement ps = conn.prepareStatement("SELECT count(*) FROM lineitem WHERE l_quantity < ?")) {
                for (int i = 0; i < 6; i++) { // past prepareThreshold: a named server-side statement too
                    ps.setInt(1, 10);
                    try (ResultSet rs = ps.executeQuery()) {
                        rs.next();
                        check(rs.getLong(1) == literal && literal > 0, "? parameter gives " + rs.getLong(1) + ", literal " + literal);
                    }
                }
            }
            try (PreparedStatement ps = conn.prepareStatement("SELECT n_name FROM nation WHERE n_regionkey = ? AND n_name LIKE ? ORDER BY n_name")) {
                ps.setLong(1, 3);
                ps.setString(2, "%A%");
                List<String> names = new ArrayList<>();
                try (ResultSet rs = ps.executeQuery()) {
                    while (rs.next()) names.add(rs.getString(1).trim());
                }
                check(names.equals(List.of("FRANCE", "GERMANY", "ROMANIA", "RUSSIA")), "nations " + names);
            }
            try (Statement st = conn.createStatement()) {
                st.executeQuery("SELECT * FROM no_such_table");
                check(false, "a missing table did not raise");
            } catch (SQLException e) {
                check("42P01".equals(e.getSQLState()), "SQLSTATE " + e.getSQLState() + ": " + e.getMessage());
            }
        }
        System.out.println("JDBC OK");
    }
}
