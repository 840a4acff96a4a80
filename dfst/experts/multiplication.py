"""The multiplication experts mult2 and mult10: Horner's rule in 6 to 8.3·n² steps.

Input ``a×b`` lies on row 0 and the agent starts on the first digit of ``a``.
Row 1 contains the working copy P of ``a``, row 2 the accumulator.  For each
digit m of ``b``, most significant first, the accumulator becomes
``acc·radix + a·m`` in four steps:

1. place a ``×`` delimiter on row 1 one column left of ``a``;
2. sweep right along ``a``, copying each digit onto row 1 and shifting ``a``
   one column right.  The last digit of ``a`` moves onto the ``×``, and the
   ``×`` moves onto the first digit m of ``b``, which the agent picks up;
3. carry m down and left over blank row 1 to the last digit of P and multiply
   P in place by m, right to left, with states MUL(m, c) that carry c.  The
   final carry replaces the delimiter as P's top digit;
4. walk back to the last digit of P and add P into row 2, right to left,
   erasing P.  A carry out of P's top digit ripples on into row 2.

For m = 1 the agent skips step 3 and the walk back: it adds P as it is, and
the delimiter counts as a top digit 0.

Shifting ``a`` right by one column each round aligns P one column further
right, which multiplies the accumulator by the radix.  When ``b`` is used up
the agent erases rows 0 and 1, strips the accumulator's leading zeros (keeping
one 0 for a zero product) and halts on a blank.

States that carry a digit value meet digits only where they act on them: the
shift states X(v) read and rewrite the digit they shift, MUL(m, c) multiplies
the digit it reads, V(v) adds into the digit it reads, and the walks over
digits (RET, LEFT) carry no value.  Every (value, digit) combination already
occurs with operands of at most three digits.
"""

from __future__ import annotations

from dfst.experts.spec import HALT, KEEP, ExpertSpec, SymbolClasses, compile_rules, rule
from dfst.grid import Alphabet


def multiplier_states(radix: int) -> list[tuple[int, int]]:
    """Return the (multiplier digit m, carry c) pairs the multiply sweep can reach.

    Multiplying by m leaves a carry of at most m − 1, because
    (radix − 1)·m + (m − 1) < radix·m.  m = 0 only ever has carry 0, and
    m = 1 needs no multiply sweep.
    """
    return [(m, c) for m in range(radix) if m != 1 for c in range(max(m, 1))]


def multiplication_expert(radix: int) -> ExpertSpec:
    """Build the multiplication expert for ``radix`` (2 to 10; the tasks use 2 and 10)."""
    if not 2 <= radix <= 10:
        raise ValueError(f"radix {radix} is not supported; the multiplication expert needs a radix from 2 to 10")
    alphabet = Alphabet(radix, "×")
    sym = SymbolClasses(alphabet)
    blank, times, digits = sym.blank, sym.operator, sym.digits
    erase = blank[0]

    def digit(value: int) -> int:
        return sym.digit(value)[0]

    def mul(m: int, c: int) -> str:
        return f"MUL{m}_{c}"

    rules = []

    # Find the first digit of a from the left and put the delimiter for P
    # on row 1 one column left of it.
    rules += [
        rule("FIND", blank, "FIND", KEEP, "R"),
        rule("FIND", digits, "PLACE", KEEP, "L"),
        rule("PLACE", blank, "DELIM", KEEP, "D"),
        rule("DELIM", blank, "SHIFT", times[0], "U"),
        rule("SHIFT", blank, "SHIFT", KEEP, "R"),
    ]

    # Shift a one column right while copying it onto row 1.  SHIFT carries
    # no digit yet and vacates the first column.  X(v) writes v, the digit
    # from the column to its left, and takes up the digit it reads.
    for value in range(radix):
        rules.append(rule("SHIFT", sym.digit(value), f"X{value}", erase, "D"))
    for carried in range(radix):
        carry_state = f"X{carried}"
        for value in range(radix):
            rules.append(rule(carry_state, sym.digit(value), f"X{value}", digit(carried), "D"))
        rules += [
            rule(carry_state, blank, f"UP{carried}", digit(carried), "R"),
            rule(f"UP{carried}", blank, carry_state, KEEP, "U"),
            rule(carry_state, times, "TIMES", digit(carried), "R"),
        ]

    # The '×' moves onto the first digit of b; that digit is the multiplier.
    # No digit left means b is used up.
    for m in range(radix):
        rules.append(rule("TIMES", sym.digit(m), "MUL1" if m == 1 else mul(m, 0), times[0], "D"))
    rules.append(rule("TIMES", blank, "ERASE_TOP", KEEP, "L"))

    # Multiply P in place by m, right to left.  MUL(m, 0) first walks left
    # over blank row 1 to the last digit of P; the final carry replaces the
    # delimiter as P's top digit.
    for m, c in multiplier_states(radix):
        state = mul(m, c)
        if c == 0:
            rules.append(rule(state, blank, state, KEEP, "L"))
        for value in range(radix):
            product = value * m + c
            rules.append(rule(state, sym.digit(value), mul(m, product // radix), digit(product % radix), "L"))
        rules.append(rule(state, times, "RET", digit(c), "R"))

    # Multiplying by 1 leaves P as it is: walk left to its last digit and
    # start adding at once.
    rules.append(rule("MUL1", blank, "MUL1", KEEP, "L"))
    for value in range(radix):
        rules.append(rule("MUL1", sym.digit(value), f"V{value}", erase, "D"))

    # Walk back over P to its last digit.  In binary only m = 0 takes the
    # multiply sweep, so P then contains only zeros.
    product_digits = digits if radix > 2 else sym.digit(0)
    rules += [
        rule("RET", product_digits, "RET", KEEP, "R"),
        rule("RET", blank, "C0", KEEP, "L"),
    ]

    # Add P into the accumulator on row 2, right to left, erasing P.  C(c)
    # reads a digit of P with carry c, V(v) adds v into the accumulator digit
    # below (a blank counts as 0), B(c) steps left along the emptied row 1.
    # A carry left over at P's top digit ripples on as C1 over blank row 1.
    # After a multiplication by 1 the delimiter is still there and counts
    # as P's top digit 0.
    for c in range(2):
        for value in range(radix):
            rules.append(rule(f"C{c}", sym.digit(value), f"V{value + c}", erase, "D"))
        rules += [
            rule(f"C{c}", times, f"V{c}", erase, "D"),
            rule(f"B{c}", blank, f"C{c}", KEEP, "L"),
        ]
    rules += [
        rule("C0", blank, "FIND", KEEP, "U"),
        rule("C1", blank, "V1", KEEP, "D"),
    ]
    for v in range(radix + 1):
        for value in range(radix):
            total = value + v
            rules.append(rule(f"V{v}", sym.digit(value), f"B{total // radix}", digit(total % radix), "U"))
        # The accumulator has no digit only in its new last column and in the
        # first round, where no carry is pending, so v is below the radix.
        if v < radix:
            rules.append(rule(f"V{v}", blank, "B0", digit(v), "U"))

    # Clean up: erase rows 0 and 1 column by column, right to left, up to
    # the delimiter.  Then walk left along the accumulator, strip its leading
    # zeros and halt on the blank left of the product.
    rules += [
        rule("ERASE_TOP", digits + blank, "ERASE_MID", erase, "D"),
        rule("ERASE_MID", digits + blank, "ERASE_NEXT", erase, "U"),
        rule("ERASE_NEXT", blank, "ERASE_TOP", KEEP, "L"),
        rule("ERASE_MID", times, "LEFT", erase, "D"),
        rule("LEFT", digits, "LEFT", KEEP, "L"),
        rule("LEFT", blank, "STRIP", KEEP, "R"),
        rule("STRIP", sym.digit(0), "STRIP", erase, "R"),
        rule("STRIP", digits[1:], HALT, KEEP, "L"),
        # Every digit was a 0: the product is 0.
        rule("STRIP", blank, HALT, digit(0), "L"),
    ]

    return compile_rules(
        task=f"mult{radix}",
        operation="mult",
        alphabet=alphabet,
        start_state="FIND",
        start_cell="first_digit",
        rules=rules,
        halt_symbols=blank,
        description=(
            "Horner's rule: for each digit m of b, most significant first, shifts a one column right "
            "while copying it to row 1, multiplies the copy in place by m and adds it into the "
            "accumulator on row 2."
        ),
    )
