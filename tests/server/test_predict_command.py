"""predict's output without a server: the top-k table, its bars, and the error line of a refused image."""

from mar_builder.server.predict_command import BAR_WIDTH, bar, error_line, table

ANSWER = {"Egyptian cat": 0.3778, "tiger cat": 0.3764, "lynx": 0.0158, "window screen": 0.001}


def test_the_table_has_a_row_per_label_in_the_answers_order():
    lines = table("chelsea.png", ANSWER).splitlines()
    assert lines[0] == "chelsea.png"
    assert [line.split("  ")[1].strip() for line in lines[1:]] == list(ANSWER)
    assert lines[1] == "  Egyptian cat    37.78%  " + bar(0.3778)
    assert lines[4] == "  window screen    0.10%"  # too small for a bar


def test_bars_are_proportional_in_eighths_of_a_character():
    assert bar(1.0) == "█" * BAR_WIDTH
    assert bar(0.5) == "█" * (BAR_WIDTH // 2)
    assert bar(1 / BAR_WIDTH / 8 * 3) == "▍"
    assert bar(0.0) == "" and bar(1.5) == bar(1.0)


def test_a_list_of_answers_gets_a_numbered_table_each():
    lines = table("two.png", [ANSWER, {"lynx": 1.0}]).splitlines()
    assert lines[0] == "two.png [0]" and lines[5] == "two.png [1]"
    assert lines[6] == "  lynx  100.00%  " + "█" * BAR_WIDTH


def test_an_answer_that_is_not_a_top_k_object_is_shown_as_it_came():
    assert table("x.png", {"status": "queued"}).splitlines()[1] == '  {"status": "queued"}'


def test_a_refusal_is_one_line_with_status_type_and_message():
    answer = {"code": 400, "type": "InvalidImage", "message": "not a decodable image"}
    assert error_line(400, answer) == "400 InvalidImage: not a decodable image"
    assert error_line(413, {"message": ""}) == "413"
    assert error_line(0, {"type": "UnreadableFile", "message": "Is a directory"}) == "UnreadableFile: Is a directory"
