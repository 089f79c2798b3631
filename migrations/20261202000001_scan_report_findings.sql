-- The findings of each vulnerability report in compact form, for policy evaluation: one JSON
-- array [id, package, version, severity, fix_version|null] per vulnerability, written by the
-- same upsert as the report (src/scanner/summary.rs extracts them while counting). NULL for
-- reports without findings (SBOM, raw). Evaluation reads this column only, never the body.
ALTER TABLE scan_report ADD COLUMN IF NOT EXISTS findings jsonb;

-- Reports stored before this column existed get their findings once, here, with the severity
-- mapping of src/scanner/summary.rs (`bucket`) and its 256-character cap per field.
UPDATE scan_report AS r SET findings = f.findings
FROM (
    SELECT s.id, coalesce(jsonb_agg(jsonb_build_array(
        CASE WHEN jsonb_typeof(v->'id') = 'string' THEN left(v->>'id', 256) ELSE '' END,
        CASE WHEN jsonb_typeof(v->'package') = 'string' THEN left(v->>'package', 256) ELSE '' END,
        CASE WHEN jsonb_typeof(v->'version') = 'string' THEN left(v->>'version', 256) ELSE '' END,
        CASE lower(btrim(CASE WHEN jsonb_typeof(v->'severity') = 'string' THEN v->>'severity' END))
            WHEN 'critical' THEN 'Critical' WHEN 'high' THEN 'High' WHEN 'medium' THEN 'Medium'
            WHEN 'low' THEN 'Low' WHEN 'none' THEN 'None' WHEN 'negligible' THEN 'None'
            ELSE 'Unknown' END,
        CASE WHEN jsonb_typeof(v->'fix_version') = 'string' AND btrim(v->>'fix_version') <> ''
            THEN to_jsonb(left(v->>'fix_version', 256)) ELSE 'null'::jsonb END
    ) ORDER BY e.ord) FILTER (WHERE e.v IS NOT NULL), '[]'::jsonb) AS findings
    FROM scan_report AS s
    LEFT JOIN LATERAL jsonb_array_elements(
        CASE WHEN jsonb_typeof(s.report->'vulnerabilities') = 'array'
            THEN s.report->'vulnerabilities' ELSE '[]'::jsonb END
    ) WITH ORDINALITY AS e(v, ord) ON true
    WHERE s.findings IS NULL
      AND s.mime_type IN (
        'application/vnd.security.vulnerability.report; version=1.1',
        'application/vnd.scanner.adapter.vuln.report.harbor+json; version=1.0')
    GROUP BY s.id
) AS f
WHERE r.id = f.id;
