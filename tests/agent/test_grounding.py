"""The figure check: an answer's numbers must come from what the agent read."""

from pathlib import Path

from alambic.agent.grounding import unsupported_figures

PASSAGE = "UK standard delivery costs £3.95 and is free over £40. The shop opens 09:00 to 17:00; call 0131 555 0142."


def test_a_made_up_price_is_caught_and_the_documents_figures_pass() -> None:
    assert unsupported_figures("Delivery is £4.95, free over £40.", [PASSAGE]) == ["4.95"]
    assert unsupported_figures("It costs £3.95, and it is free over £40.00.", [PASSAGE]) == []
    assert unsupported_figures("We open at 9 and close at 17:00.", [PASSAGE]) == []
    assert unsupported_figures("We close at 17:30.", [PASSAGE]) == ["17:30"]
    assert unsupported_figures("Call 0131 555 0143.", [PASSAGE]) == ["143"]


def test_the_same_value_written_another_way_is_the_same_figure() -> None:
    assert unsupported_figures("A bag is £12.5, the box 1,200 g.", ["A bag costs £12.50; the box weighs 1200 g."]) == []
    assert unsupported_figures("It costs £12.05.", ["It costs £12.50."]) == ["12.05"]


def test_figures_from_any_source_count_and_each_is_named_once() -> None:
    tool_result = 'order_status({"order_id": "QL-1006"}): [{"tracking": "RM771204558GB"}]'
    answer = "Order QL-1006 is with tracking RM771204558GB; it left 12 days ago, 12 days!"
    assert unsupported_figures(answer, [PASSAGE, tool_result]) == ["12"]
    assert unsupported_figures("No figures here.", []) == []


def test_arabic_indic_digits_match_their_latin_twins() -> None:
    arabic = "الشحن إلى مصر بسعر 14 جنيهاً إسترلينياً"
    assert unsupported_figures("التكلفة ١٤ جنيهاً", [arabic]) == []
    assert unsupported_figures("التكلفة ١٦ جنيهاً", [arabic]) == ["16"]


def test_the_release_counts_the_calibration_answers_that_make_up_figures(agent_project: Path) -> None:
    from alambic.agent.loop import AgentCalibration
    from alambic.project import Project
    from alambic.results import ReleaseResult

    project = Project.open(agent_project)
    release = project.ledger.latest_done("release").result(ReleaseResult)
    project.close()
    calibration = AgentCalibration.model_validate_json((Path(release.agent) / "calibration.json").read_text("utf-8"))
    assert calibration.made_up_figures is not None
    assert 0 <= calibration.made_up_figures <= calibration.calibrated_on
