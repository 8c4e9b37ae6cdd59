from alambic.text import folded, normalise, script, whole_sentences, words


def test_normalise_keeps_every_script_and_drops_case_punctuation_and_spacing() -> None:
    assert normalise("Where do  you SHIP?") == "where do you ship"
    assert normalise("هل تشحنون إلى مصر؟") == "هل تشحنون الي مصر"
    assert normalise("今日は発送しますか？") == "今日は発送しますか"


def test_arabic_is_folded_as_its_readers_read_it() -> None:
    plain = "هل تشحنون الى مصر"
    assert normalise("هَلْ تَشْحَنُونَ إِلَى مِصْرَ؟") == normalise(plain)  # harakat
    assert normalise("هل تشحـــنون إلى مصر") == normalise(plain)  # tatweel
    assert normalise("هل تشحنون إلي مصر") == normalise(plain)  # ya for alef maqsura
    assert words("مكتبة القهوة") == words("مكتبه القهوه")  # ta marbuta
    assert normalise("آخر أسعار") == normalise("اخر اسعار")  # alef variants


def test_latin_diacritics_and_compatibility_forms_fold() -> None:
    assert folded("Café ﬁne") == "cafe fine"
    assert words("It's 5€, free over £80.") == ["it", "s", "5", "free", "over", "80"]


def test_script_is_the_main_script_of_the_letters() -> None:
    assert script("Our price list: 250 g for €12") == "LATIN"
    assert script("قائمة الأسعار: 250 غ بـ 12 يورو (Ethiopia Yirgacheffe)") == "ARABIC"
    assert script("12 / 250") is None


def test_an_answer_cut_short_keeps_its_whole_sentences_in_any_script() -> None:
    assert whole_sentences("Delivery is £3.95. Orders over £40 ship fr") == "Delivery is £3.95."
    arabic = "نشحن إلى مصر. تكلفة الشحن 14 جنيهاً. الشحن مجاني للطلبات التي"
    assert whole_sentences(arabic) == "نشحن إلى مصر. تكلفة الشحن 14 جنيهاً."
    assert whole_sentences("هل تشحنون؟ نعم نشح") == "هل تشحنون؟"
    assert whole_sentences("我们周二烘焙。周四也") == "我们周二烘焙。"
    assert whole_sentences("We ship to:\n- Ireland\n- Fran") == "We ship to:\n- Ireland"  # a line ends one too
    assert whole_sentences("It costs £3.95 and") == "It costs £3.95 and"  # no whole sentence: all of it
    assert whole_sentences("Done. ") == "Done."
