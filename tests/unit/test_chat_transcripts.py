from pathlib import Path

import pytest
from pydantic import ValidationError

from app.domain.chat_transcripts import ChatProblem, IdFields, RenderOptions, parse_chat
from app.domain.markers import count_fillers, count_repetitions

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "chat"
BULLET = "\x15"

PAR_ID = "eng|Pitt|PAR|57;|male|ProbableAD||Participant|18||"
INV_ID = "eng|Pitt|INV|||||Investigator|||"


def make_chat(*tiers: str, par_id: str = PAR_ID, extra_headers: tuple[str, ...] = ()) -> str:
    """A small CHAT file: the usual headers (lines 1-6), then ``extra_headers``, the tiers and @End."""
    head = [
        "@UTF8", "@Begin", "@Languages:\teng", "@Participants:\tPAR Participant, INV Investigator",
        f"@ID:\t{par_id}", f"@ID:\t{INV_ID}", *extra_headers,
    ]
    return "\n".join([*head, *tiers, "@End"]) + "\n"


def render(tier: str, **options) -> str:
    """The transcript of a file whose only tier is ``*PAR: <tier>``; fails on any problem."""
    result = parse_chat(make_chat(f"*PAR:\t{tier}"), name="t.cha", options=RenderOptions(**options))
    assert result.errors == []
    return result.transcript


def problems(text: str, **options) -> list[tuple[int | None, str]]:
    result = parse_chat(text, name="t.cha", options=RenderOptions(**options))
    assert result.transcript == ""
    return [(problem.line, problem.code) for problem in result.errors]


# One row per rendering rule: CHAT main tier, verbatim, clean.
RULES = {
    "fillers": ("&-uh the boy &-um fell .", "uh the boy um fell.", "the boy fell."),
    "fragments": ("the &+coo cookie .", "the coo cookie.", "the cookie."),
    "nonwords": ("&~gaga the boy .", "gaga the boy.", "the boy."),
    "events": ("the boy &=laughs fell .", "the boy fell.", "the boy fell."),
    "long events": ("&{l=laughs the boy &}l=laughs fell .", "the boy fell.", "the boy fell."),
    "interposed words": ("the boy &*INV:mhm fell .", "the boy fell.", "the boy fell."),
    "repetition": ("the boy is [/] is here .", "the boy is is here.", "the boy is here."),
    "scoped repetition": ("<the boy> [/] the boy fell .", "the boy the boy fell.", "the boy fell."),
    "retracing": ("<the girl> [//] the boy fell .", "the girl the boy fell.", "the boy fell."),
    "reformulation": ("he [///] she fell .", "he she fell.", "she fell."),
    "nested scopes": ("<the <boy> [/] boy> [//] the boy fell .", "the boy boy the boy fell.", "the boy fell."),
    "multiple repetition": ("cookie [x 3] please .", "cookie cookie cookie please.", "cookie please."),
    "scoped multiple repetition": ("<the jar> [x 2] fell .", "the jar the jar fell.", "the jar fell."),
    "pauses": ("the (.) boy (..) is (...) here .", "the ... boy ... is ... here.", "the boy is here."),
    "timed pauses": ("the (1.5) boy (1:05.3) fell .", "the ... boy ... fell.", "the boy fell."),
    "a run of pauses": ("the (.) (..) boy .", "the ... boy.", "the boy."),
    "pause before the terminator": ("the boy fell (..) .", "the boy fell.", "the boy fell."),
    "unintelligible": ("xxx the yyy boy www .", "xxx the xxx boy xxx.", "the boy."),
    "unintelligible with a marker": ("xxx@a the boy .", "xxx the boy.", "the boy."),
    "replacement": ("the mother [: mom] washes .", "the mother washes.", "the mom washes."),
    "scoped replacement": ("<the girl> [: a kid] runs .", "the girl runs.", "a kid runs."),
    "error codes": ("it [*] was [* s:r] good .", "it was good.", "it was good."),
    "explanations": ("the boy [= the son] is [=! whispers] here .", "the boy is here.", "the boy is here."),
    "postcodes": ("the boy fell [+ exc] .", "the boy fell.", "the boy fell."),
    "stress and doubt": ("she [!] doesn't [?] see [!!] .", "she doesn't see.", "she doesn't see."),
    "overlaps": ("the boy [<] is <here> [>] .", "the boy is here.", "the boy is here."),
    "scoped codes": ("<the boy> [!] is here .", "the boy is here.", "the boy is here."),
    "comments": ("the boy [% points] is here .", "the boy is here.", "the boy is here."),
    "form markers": ("the dog@o and gonna@s:spa b@l .", "the dog and gonna b.", "the dog and gonna b."),
    "omitted words": ("0the boy 0is here .", "boy here.", "boy here."),
    "incomplete words": ("he's takin(g) it (be)cause .", "he's takin it cause.", "he's taking it because."),
    "compounds": ("the ice+cream and the_water .", "the ice cream and the water.", "the ice cream and the water."),
    "prosody marks": ("the wa:ter hel^lo .", "the water hello.", "the water hello."),
    "commas": ("the boy , he fell .", "the boy, he fell.", "the boy, he fell."),
    "trailing off": ("the boy +...", "the boy.", "the boy."),
    "interruption": ("the boy +/.", "the boy.", "the boy."),
    "self-interruption": ("the boy +//.", "the boy.", "the boy."),
    "quotation follows": ('he said +"/.', "he said.", "he said."),
    "quotation precedes": ('he said +".', "he said.", "he said."),
    "question": ("is it ?", "is it?", "is it?"),
    "interrupted question": ("is it +/?", "is it?", "is it?"),
    "trailing-off question": ("is it +..?", "is it?", "is it?"),
    "self-interrupted question": ("is it +//?", "is it?", "is it?"),
    "exclamation": ("look !", "look!", "look!"),
    "lazy overlap linker": ("+< the boy .", "the boy.", "the boy."),
    "self completion linker": ("+, the boy .", "the boy.", "the boy."),
    "other completion linker": ("++ the boy .", "the boy.", "the boy."),
    "quoted utterance linker": ('+" the boy .', "the boy.", "the boy."),
    "time bullets": (f"the boy {BULLET}100_900{BULLET} fell . {BULLET}900_2000{BULLET}", "the boy fell.", "the boy fell."),
    "vocative and tag markers": ("mom ‡ the boy „ isn't it ?", "mom the boy isn't it?", "mom the boy isn't it?"),
    "quotes and intonation arrows": ("the ↑boy “said” ⇗ so .", "the boy said so.", "the boy said so."),
}


class TestVerbatim:
    @pytest.mark.parametrize(("tier", "expected"), [(t, v) for t, v, _ in RULES.values()], ids=list(RULES))
    def test_rule(self, tier, expected):
        assert render(tier) == expected

    def test_is_the_default_style(self):
        assert RenderOptions().style == "verbatim"
        assert render("&-uh the boy is [/] is .") == "uh the boy is is."


class TestClean:
    @pytest.mark.parametrize(("tier", "expected"), [(t, c) for t, _, c in RULES.values()], ids=list(RULES))
    def test_rule(self, tier, expected):
        assert render(tier, style="clean") == expected

    def test_ignores_the_verbatim_options(self):
        tier = "&+coo the (.) boy xxx ."
        assert render(tier, style="clean", keep_fragments=True, pauses="ellipsis", unintelligible="marker") == "the boy."


class TestOptions:
    def test_fragments_dropped(self):
        assert render("the &+coo cookie &~gaga .", keep_fragments=False) == "the cookie."

    def test_fillers_stay_when_fragments_drop(self):
        assert render("&-uh the &+coo cookie .", keep_fragments=False) == "uh the cookie."

    def test_pauses_dropped(self):
        assert render("the (.) boy (1.5) is (...) here .", pauses="drop") == "the boy is here."

    def test_unintelligible_dropped(self):
        assert render("xxx the yyy boy www .", unintelligible="drop") == "the boy."

    @pytest.mark.parametrize("bad", [
        {"style": "plain"}, {"pauses": "keep"}, {"unintelligible": "xxx"}, {"speaker": "P A R"},
        {"speaker": ""}, {"mmse_slot": "ses"}, {"colour": "blue"},
    ])
    def test_refuses_bad_values(self, bad):
        with pytest.raises(ValidationError):
            RenderOptions(**bad)


class TestOldNotation:
    def test_fillers_and_fragments_read_as_modern_chat(self):
        result = parse_chat(make_chat("*PAR:\t&uh the &ja jar &um .", "*PAR:\t<&er the> [/] the boy ."), name="t.cha")
        assert result.errors == []
        assert result.transcript == "uh the ja jar um. er the the boy."
        assert [(w.line, w.code) for w in result.warnings] == [(7, "chat_old_notation")]

    def test_clean_drops_them(self):
        assert render("&uh the &ja jar .", style="clean") == "the jar."

    def test_only_main_tiers_are_rewritten(self):
        text = make_chat("*PAR:\tthe boy is here .", "%mor:\tdet|the n|boy aux|be&3S adv|here .")
        result = parse_chat(text, name="t.cha")
        assert (result.errors, result.warnings) == ([], [])


class TestSpeakers:
    TEXT = make_chat(
        "*INV:\ttell me what you see .", "*PAR:\tthe boy &-uh fell .", "*INV:\tmhm .", "*PAR:\tand the water runs .",
    )

    def test_only_the_participant_is_kept(self):
        result = parse_chat(self.TEXT, name="t.cha")
        assert result.transcript == "the boy uh fell. and the water runs."
        assert "tell" not in result.transcript and "mhm" not in result.transcript

    def test_another_speaker_can_be_chosen(self):
        result = parse_chat(self.TEXT, name="t.cha", options=RenderOptions(speaker="INV"))
        assert result.transcript == "tell me what you see. mhm."
        assert result.utterances == 2
        assert result.id_fields == IdFields()

    def test_utterances_are_counted_and_joined_with_one_space(self):
        result = parse_chat(make_chat("*PAR:\tone .", "*PAR:\ttwo\n\tthree ?", "*PAR:\tfour !"), name="t.cha")
        assert result.utterances == 3
        assert result.transcript == "one. two three? four!"

    def test_utterances_that_render_empty_are_skipped(self):
        text = make_chat("*PAR:\tthe boy .", "*PAR:\txxx .", "*PAR:\tfell .")
        result = parse_chat(text, name="t.cha", options=RenderOptions(unintelligible="drop"))
        assert (result.transcript, result.utterances) == ("the boy. fell.", 3)


class TestHeaders:
    def test_participants_and_id_fields(self):
        result = parse_chat(make_chat("*PAR:\tthe boy ."), name="t.cha")
        assert result.participants == ["PAR", "INV"]
        assert result.id_fields == IdFields(group="ProbableAD", mmse=18, age="57;", age_years=57, sex="male")

    def test_mmse_from_the_custom_field(self):
        par_id = "eng|Pitt|PAR|61;06.|female|Control||Participant||MMSE=29|"
        result = parse_chat(make_chat("*PAR:\tok .", par_id=par_id), name="t.cha", options=RenderOptions(mmse_slot="custom"))
        assert result.errors == []
        assert result.id_fields == IdFields(group="Control", mmse=29, age="61;06.", age_years=61, sex="female")

    def test_mmse_not_read_when_told_not_to(self):
        result = parse_chat(make_chat("*PAR:\tok ."), name="t.cha", options=RenderOptions(mmse_slot="none"))
        assert (result.errors, result.id_fields.mmse) == ([], None)

    def test_missing_values_are_none(self):
        result = parse_chat(make_chat("*PAR:\tok .", par_id="eng|Pitt|PAR|||||Participant|||"), name="t.cha")
        assert (result.errors, result.id_fields) == ([], IdFields())


class TestFixtures:
    def test_pitt_style_probable_ad(self):
        text = (FIXTURES / "pitt_probable_ad.cha").read_text(encoding="utf-8")
        result = parse_chat(text, name="pitt_probable_ad.cha")
        assert (result.errors, result.warnings) == ([], [])
        assert result.transcript == (
            "uh the boy is is st standing on a ... stool. and he's gettin the cookie cookie out of the jar. "
            "the mother is washing dishes ... and um the water's overflowing. "
            "xxx ... she doesn't see it does she? no that's that's all."
        )
        assert (result.utterances, result.participants) == (5, ["PAR", "INV"])
        assert result.id_fields == IdFields(group="ProbableAD", mmse=18, age="68;", age_years=68, sex="female")
        clean = parse_chat(text, name="pitt_probable_ad.cha", options=RenderOptions(style="clean"))
        assert clean.transcript == (
            "the boy is standing on a stool. and he's getting cookies out of the jar. "
            "the mother is washing dishes and the water's overflowing. she doesn't see it does she? no that's all."
        )

    def test_disfluencies_reach_the_markers_only_in_verbatim(self):
        text = (FIXTURES / "pitt_probable_ad.cha").read_text(encoding="utf-8")
        verbatim = parse_chat(text, name="p.cha").transcript
        clean = parse_chat(text, name="p.cha", options=RenderOptions(style="clean")).transcript
        assert (count_fillers(verbatim), count_repetitions(verbatim)) == (2, 3)
        assert (count_fillers(clean), count_repetitions(clean)) == (0, 0)

    def test_adress_style_control(self):
        result = parse_chat((FIXTURES / "adress_control.cha").read_text(encoding="utf-8"), name="adress_control.cha")
        assert result.errors == []
        assert result.transcript.startswith("well uh there's a young boy reaching into the cookie jar.")
        assert result.transcript.endswith("ju um the window's open.")
        assert result.id_fields == IdFields(group="Control", mmse=29, age="63;", age_years=63, sex="male")
        assert [w.code for w in result.warnings] == ["chat_old_notation"]

    def test_malformed(self):
        result = parse_chat((FIXTURES / "malformed.cha").read_text(encoding="utf-8"), name="malformed.cha")
        assert [(p.line, p.code) for p in result.errors] == [
            (5, "chat_bad_id"), (10, "chat_unreadable_line"), (11, "chat_no_end"),
        ]
        assert str(result.errors[1]).startswith("malformed.cha, line 10: not a CHAT line")
        assert (result.ok, result.transcript) == (False, "")

    def test_every_cut_of_a_file_is_answered_without_an_exception(self):
        lines = (FIXTURES / "pitt_probable_ad.cha").read_text(encoding="utf-8").split("\n")
        assert lines[-2:] == ["@End", ""]
        for cut in range(len(lines) - 2):
            result = parse_chat("\n".join(lines[:cut]), name="cut.cha")
            assert result.errors, cut
            assert all(problem.file == "cut.cha" and problem.line for problem in result.errors)


class TestMalformed:
    def test_problem_names_file_and_line(self):
        problem = ChatProblem("001-0.cha", 12, "chat_unreadable", "utterance missing terminator")
        assert str(problem) == "001-0.cha, line 12: utterance missing terminator"

    def test_no_begin(self):
        assert problems(make_chat("*PAR:\tok .").replace("@Begin\n", "")) == [(1, "chat_no_begin")]

    def test_no_end(self):
        assert problems(make_chat("*PAR:\tok .").replace("@End\n", "")) == [(7, "chat_no_end")]

    def test_empty_file(self):
        assert problems("") == [(1, "chat_no_begin"), (1, "chat_no_end")]

    def test_not_a_chat_file(self):
        assert problems("id,text,label\nS001,the boy,1\n") == [
            (1, "chat_unreadable_line"), (2, "chat_unreadable_line"), (1, "chat_no_begin"), (2, "chat_no_end"),
        ]

    def test_line_that_is_no_chat_line(self):
        text = make_chat("*PAR:\tthe boy fell .", "and the girl laughed .", "*PAR:\tok .")
        assert problems(text) == [(8, "chat_unreadable_line")]

    def test_main_tier_without_a_colon(self):
        assert problems(make_chat("*PAR:\tok .", "*PAR the boy .")) == [(8, "chat_unreadable_line")]

    def test_text_after_end(self):
        assert problems(make_chat("*PAR:\tok .") + "*PAR:\tmore .\n") == [(9, "chat_after_end")]

    def test_no_tiers_by_the_speaker(self):
        assert problems(make_chat("*INV:\twhat do you see ?")) == [(4, "chat_no_utterances")]

    def test_speaker_not_declared(self):
        text = make_chat("*INV:\tok .").replace("PAR Participant, ", "").replace(f"@ID:\t{PAR_ID}\n", "")
        assert problems(text) == [(4, "chat_speaker_undeclared"), (4, "chat_no_utterances")]

    def test_id_with_too_few_fields(self):
        assert problems(make_chat("*PAR:\tok .", par_id="eng|Pitt|PAR|57")) == [(5, "chat_bad_id")]

    def test_id_age_unreadable(self):
        par_id = "eng|Pitt|PAR|fifty|male|ProbableAD||Participant|18||"
        assert problems(make_chat("*PAR:\tok .", par_id=par_id)) == [(5, "chat_bad_id")]

    @pytest.mark.parametrize("mmse", ["45", "college"])
    def test_id_mmse_unreadable(self, mmse):
        par_id = f"eng|Pitt|PAR|57;|male|ProbableAD||Participant|{mmse}||"
        assert problems(make_chat("*PAR:\tok .", par_id=par_id)) == [(5, "chat_bad_id")]

    def test_unpaired_scope(self):
        text = make_chat("*PAR:\tok .", "*PAR:\tthe <boy is [/] is .")
        assert problems(text) == [(8, "chat_malformed_tier")]

    def test_unpaired_bracket(self):
        assert problems(make_chat("*PAR:\tthe boy [/ is .")) == [(7, "chat_malformed_tier")]

    def test_nothing_left_once_rendered(self):
        assert problems(make_chat("*PAR:\txxx .", "*PAR:\t(.) ."), unintelligible="drop") == [(7, "chat_empty_transcript")]

    # What pylangacq refuses, located by re-reading the headers and each tier on its own.
    @pytest.mark.parametrize(("tiers", "line"), [
        (("*PAR:\tok .", "*PAR:\tthe dog@zzz barked ."), 8),
        (("*PAR:\tok .", "*PAR:\tthe boy fell", "*INV:\tmhm ."), 8),
        (("*PAR:\tok .", "*PAR:\tthe boy .", "%com:\tone", "%com:\ttwo"), 8),
        (("*PAR:\tthe &=0 boy .",), 7),
        ((f"*PAR:\tthe boy . {BULLET}5000_1000{BULLET}",), 7),
    ], ids=["form marker", "no terminator", "duplicate dependent tier", "empty event", "bullet order"])
    def test_tier_refused_by_pylangacq(self, tiers, line):
        assert problems(make_chat(*tiers)) == [(line, "chat_unreadable")]

    def test_refusal_message_is_pylangacq_s_without_its_source_id(self):
        result = parse_chat(make_chat("*PAR:\tthe dog@zzz barked ."), name="t.cha")
        assert str(result.errors[0]) == "t.cha, line 7: invalid form marker code: @zzz in word: dog@zzz"

    def test_id_role_contradicts_participants(self):
        par_id = "eng|Pitt|PAR|57;|male|ProbableAD||Investigator|18||"
        assert problems(make_chat("*PAR:\tok .", par_id=par_id)) == [(5, "chat_unreadable")]

    def test_participant_without_id(self):
        text = make_chat("*PAR:\tok .").replace(f"@ID:\t{INV_ID}\n", "")
        assert problems(text) == [(4, "chat_unreadable")]

    @pytest.mark.parametrize(("header", "line"), [
        ("@Media:\thttp://example.org/a.mp3, audio", 7), ("@Options:\tnonsense", 7),
    ])
    def test_header_refused_by_pylangacq(self, header, line):
        assert problems(make_chat("*PAR:\tok .", extra_headers=(header,))) == [(line, "chat_unreadable")]

    def test_unreadable_age(self):
        par_id = "eng|Pitt|PAR|61;6.|female|Control||Participant|29||"
        assert problems(make_chat("*PAR:\tok .", par_id=par_id)) == [(5, "chat_unreadable")]

    def test_media_name_need_not_match_the_file_name(self):
        result = parse_chat(make_chat("*PAR:\tok .", extra_headers=("@Media:\t001-0, audio",)), name="renamed.cha")
        assert (result.errors, result.transcript) == ([], "ok.")

    def test_windows_line_ends_and_byte_order_mark(self):
        text = "\ufeff" + make_chat("*PAR:\tthe boy &-uh fell .").replace("\n", "\r\n")
        result = parse_chat(text, name="t.cha")
        assert (result.errors, result.transcript) == ([], "the boy uh fell.")
