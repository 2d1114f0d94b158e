import pytest

from app.domain.ingestion import LABELS, Record
from app.domain.splits import SPLITS, find_leaks, participant_key, transcript_key
from tests.unit.test_ingestion import OTHER_SPELLINGS, make_text


class TestParticipantKey:
    @pytest.mark.parametrize("spelling", OTHER_SPELLINGS)
    def test_spellings_of_one_id_share_a_key(self, spelling):
        assert participant_key(spelling) == participant_key("P01") == "p01"

    def test_inner_whitespace_runs_count_once(self):
        assert participant_key("site A  01") == participant_key("Site\tA 01")

    @pytest.mark.parametrize("other", ["P02", "P 01", "P1", "P01a"])
    def test_other_ids_keep_their_own_key(self, other):
        assert participant_key(other) != participant_key("P01")


class TestFindLeaks:
    """The split rules on records as stored, for data sets uploaded before they were in force."""

    def test_clean_records_have_none(self):
        records = [Record(i + 2, f"S{i}", make_text(i), LABELS[i % 2], SPLITS[i % 3]) for i in range(9)]
        assert find_leaks(records[::3], records[1::3] + records[2::3]) == []

    def test_a_second_spelling_in_another_split(self):
        train = [Record(2, "P01", make_text(1), "control", "train")]
        held_out = [Record(3, "p01 ", make_text(2), "control", "test")]
        assert [(i.code, i.row) for i in find_leaks(train, held_out)] == [("participant_in_two_splits", 3)]

    def test_a_transcript_in_another_split(self):
        train = [Record(2, "A", make_text(1), "control", "train")]
        held_out = [Record(3, "B", make_text(1), "control", "validation")]
        assert [(i.code, i.row) for i in find_leaks(train, held_out)] == [("text_in_two_splits", 3)]

    def test_validation_and_test_sharing_a_speaker_is_no_leak_into_train(self):
        held_out = [Record(3, "P01", make_text(1), "control", "validation"),
                    Record(4, "P01", make_text(2), "control", "test")]
        assert find_leaks([Record(2, "S1", make_text(3), "control", "train")], held_out) == []

    def test_transcript_key_ignores_case_width_punctuation_and_spacing(self):
        assert transcript_key("Uh,  the BOY\n fell!") == transcript_key("uh the boy fell") == "uh the boy fell"
