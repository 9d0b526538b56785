package fs

import "testing"

func TestRestrictTakesWhatBothAllow(t *testing.T) {
	for _, tc := range []struct {
		a, b, want access
	}{
		{access{1000, 100, 0o555}, access{1000, 100, 0o555}, access{1000, 100, 0o555}},
		{access{1000, 100, 0o555}, access{1000, 100, 0o500}, access{1000, 100, 0o500}},
		{access{1000, 100, 0o444}, access{2000, 100, 0o444}, access{0, 100, 0o444}},
		{access{1000, 100, 0o555}, access{1000, 200, 0o554}, access{1000, 0, 0o544}},
		{access{1000, 100, 0o550}, access{1000, 200, 0o550}, access{1000, 0, 0o500}},
	} {
		if got := tc.a.restrict(tc.b); got != tc.want {
			t.Errorf("%+v.restrict(%+v) = %+v, want %+v", tc.a, tc.b, got, tc.want)
		}
	}
}
