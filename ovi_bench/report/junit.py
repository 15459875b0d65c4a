"""junit.xml for CI: one testsuite per suite, one testcase per case.

A failed verdict becomes <failure> (its message names the check); a case that ended oom, crash, timeout
or error without an expect_status check saying so becomes <error>; a skipped case <skipped>.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from ovi_bench.records import RunReport


def render_junit(report: RunReport) -> str:
    root = ET.Element("testsuites", name=f"ovi-bench {report.run_id}")
    for suite in report.suites:
        cases = [c for c in report.cases if c.suite == suite]
        outcomes = [report.outcomes[c.case_id] for c in cases]
        element = ET.SubElement(root, "testsuite", name=suite, tests=str(len(cases)),
                                failures=str(outcomes.count("fail")), errors=str(outcomes.count("error")),
                                skipped=str(outcomes.count("skipped")),
                                time=f"{sum(c.duration_s for c in cases):.3f}")
        properties = ET.SubElement(element, "properties")
        commit = report.environment.git_commit or ""
        for name, value in (("engine", report.engine), ("weights", report.weights),
                            ("hardware", report.hardware), ("git_commit", commit)):
            ET.SubElement(properties, "property", name=name, value=value)
        for case in cases:
            testcase = ET.SubElement(element, "testcase", classname=f"ovi-bench.{suite}", name=case.case_id,
                                     time=f"{case.duration_s:.3f}")
            outcome = report.outcomes[case.case_id]
            if outcome == "skipped":
                ET.SubElement(testcase, "skipped", message=case.error or "skipped")
            elif outcome == "error":
                where = f" in stage {case.stage}" if case.stage else ""
                node = ET.SubElement(testcase, "error", type=case.status, message=f"{case.status}{where}")
                node.text = case.error or ""
            failed = [v for v in report.verdicts_for(case.case_id) if v.failed]
            for verdict in failed:
                node = ET.SubElement(testcase, "failure", type=f"{verdict.rule}:{verdict.status}",
                                     message=verdict.message)
                node.text = verdict.message
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
