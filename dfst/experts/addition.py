"""The addition experts add2 and add10: radix + 9 states, about 2·n² steps.

Input ``a+b`` lies on row 0, the agent starts on the ``+``.  A marker ``+`` on
row 1 is one column right of the next digit of ``a`` to receive a digit of
``b``.  Row 1 is otherwise blank.  Each round:

1. walk right along row 0 to the last digit of ``b`` and erase it;
2. carry its value (one CARRY state per value) down to row 1 and left over
   blanks to the marker, and write it there;
3. merge it into ``a`` in unary: while it is not 0, decrement it and increment
   the digit up and to the left, rippling carries leftwards;
4. erase the spent 0, set the marker one column left, and write 0 into the
   column just finished if no digit reached it (columns left of ``a``).

When ``b`` is used up the agent erases both ``+`` and halts.  Carried digits
only ever cross blank cells, so every transition that depends on a digit value
already occurs on single-digit problems; this keeps the data needed to cover
every transition small.
"""

from __future__ import annotations

from dfst.experts.spec import HALT, KEEP, ExpertSpec, SymbolClasses, compile_rules, rule
from dfst.grid import Alphabet


def addition_expert(radix: int) -> ExpertSpec:
    """Build the addition expert for ``radix``."""
    alphabet = Alphabet(radix, "+")
    sym = SymbolClasses(alphabet)
    blank, plus, digits = sym.blank, sym.operator, sym.digits
    erase = blank[0]
    rules = []

    # Set up: step down from the '+', write the marker under it, step back up.
    rules += [
        rule("MARK", plus, "MARK", KEEP, "D"),
        rule("MARK", blank, "FILL", plus[0], "U"),
    ]
    # Make sure the column just finished contains a digit, then walk right.
    rules += [
        rule("FILL", blank, "RIGHT", sym.digit(0)[0], "R"),
        rule("FILL", digits + plus, "RIGHT", KEEP, "R"),
    ]
    # Walk right to the end of b and pick up its last digit.
    rules += [
        rule("RIGHT", digits + plus, "RIGHT", KEEP, "R"),
        rule("RIGHT", blank, "PICK", KEEP, "L"),
    ]
    for value in range(radix):
        rules.append(rule("PICK", sym.digit(value), f"CARRY{value}", erase, "D"))
    # b is used up: erase the '+' and go erase the marker.
    rules.append(rule("PICK", plus, "CLEAN", erase, "D"))

    # Carry the digit left over blank row 1 to the marker.  A 0 finishes the
    # column at once; any other value is written there already decremented,
    # and its first unit goes up and left.
    rules += [
        rule("CARRY0", blank, "CARRY0", KEEP, "L"),
        rule("CARRY0", plus, "MARK", erase, "L"),
    ]
    for value in range(1, radix):
        carry = f"CARRY{value}"
        rules += [
            rule(carry, blank, carry, KEEP, "L"),
            rule(carry, plus, "UPLEFT", sym.digit(value - 1)[0], "U"),
        ]

    # Merge: step from above the stacked digit to the digit one column left.
    # The cell above the stacked digit always contains a digit or the '+'.
    rules.append(rule("UPLEFT", digits + plus, "INC", KEEP, "L"))
    # Increment with a rippling carry; a blank counts as 0.
    for value in range(radix - 1):
        rules.append(rule("INC", sym.digit(value), "DEC", sym.digit(value + 1)[0], "D"))
    rules += [
        rule("INC", sym.digit(radix - 1), "INC", sym.digit(0)[0], "L"),
        rule("INC", blank, "DEC", sym.digit(1)[0], "D"),
    ]
    # Walk right along row 1 to the stacked digit and decrement it, sending the
    # unit up and left.  Once it is 0, erase it and move the marker left.
    rules += [
        rule("DEC", blank, "DEC", KEEP, "R"),
        rule("DEC", sym.digit(0), "MARK", erase, "L"),
    ]
    # The stacked digit was written already decremented, so it is below radix - 1.
    for value in range(1, radix - 1):
        rules.append(rule("DEC", sym.digit(value), "UPLEFT", sym.digit(value - 1)[0], "U"))

    # Clean up: walk left along row 1 to the marker, erase it and halt above it.
    rules += [
        rule("CLEAN", blank, "CLEAN", KEEP, "L"),
        rule("CLEAN", plus, HALT, erase, "U"),
    ]

    return compile_rules(
        task=f"add{radix}",
        operation="add",
        alphabet=alphabet,
        start_state="MARK",
        start_cell="operator",
        rules=rules,
        halt_symbols=digits,
        description=(
            "Carries each digit of b, least significant first, over blank cells to a marker "
            "below a, then adds it into a by unary decrement and rippling increment."
        ),
    )
